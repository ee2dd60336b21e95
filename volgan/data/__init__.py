"""Data: datalists, validation, method transforms, slices, unpaired domains, pairs, mixing and the embedded sample."""

from volgan.data.augmentation import standard_augmentation
from volgan.data.datalist import (
    case_name,
    find_pairs,
    is_volume_file,
    list_inputs,
    load_datalist,
    read_json,
    write_datalist,
)
from volgan.data.dataset import distributed_loader, full_batch_loader, resolve_dataset, split_datalist
from volgan.data.edges import CANNY_PRESETS, MaskWithEdgesd, canny_edges, edge_channels
from volgan.data.inputs import image_inputs, label_map_inputs, translation_inputs
from volgan.data.mixing import (
    ConditionalMixedPairsPrepareBatch,
    MixedPairsPrepareBatch,
    RealSyntheticDataset,
    minibatch_counts,
    mix_batches,
    mix_datalists,
)
from volgan.data.pairs import SameClassPairs, to_pair
from volgan.data.perturbation import (
    LesionPerturbd,
    RandLesionPerturbd,
    apply_lesion_perturbation,
    draw_lesion_perturbation,
    perturb_lesion,
)
from volgan.data.samples import (
    SAMPLE_DIR,
    SUBJECTS,
    TISSUE_LABELS,
    add_synthetic_lesion,
    make_sample_cases,
    tissue_classes,
)
from volgan.data.slices import (
    ForegroundMaskd,
    ScaleToUnitRanged,
    SliceDataset,
    SliceSplit,
    foreground_crop,
    network_input_size,
    network_slice,
    resize_slice,
    restack,
    scale_to_unit_range,
    select_slices,
)
from volgan.data.conventions import LabelConvention, label_convention
from volgan.data.masks import find_brain_mask, head_mask
from volgan.data.transforms import (
    BrainAsLabeld,
    BrainLabeld,
    ForegroundNormalized,
    LoadOptionalImaged,
    SelectChanneld,
    ToPseudoIntensityd,
    plain_tensor,
    same_type_as,
    stored_label_values,
    synthesised_channels,
)
from volgan.data.unpaired import (
    MapToSharedLabelsd,
    UnpairedDataset,
    check_unpaired,
    domain_transforms,
    intensity_transform,
    shared_label_mapping,
)
from volgan.data.validate import (
    ValidateLabelMapd,
    ValidateVolumed,
    check_image,
    check_label,
    check_pair,
    datalist_problems,
    load_volume,
    validate_datalist,
)

__all__ = [
    "standard_augmentation",
    "case_name", "find_pairs", "is_volume_file", "list_inputs", "load_datalist", "read_json", "write_datalist",
    "distributed_loader", "full_batch_loader", "resolve_dataset", "split_datalist",
    "image_inputs", "label_map_inputs", "translation_inputs",
    "CANNY_PRESETS", "MaskWithEdgesd", "canny_edges", "edge_channels",
    "ConditionalMixedPairsPrepareBatch", "MixedPairsPrepareBatch", "RealSyntheticDataset", "minibatch_counts",
    "mix_batches", "mix_datalists",
    "SameClassPairs", "to_pair",
    "LesionPerturbd", "RandLesionPerturbd", "apply_lesion_perturbation", "draw_lesion_perturbation", "perturb_lesion",
    "SAMPLE_DIR", "SUBJECTS", "TISSUE_LABELS", "add_synthetic_lesion", "make_sample_cases", "tissue_classes",
    "ForegroundMaskd", "ScaleToUnitRanged", "SliceDataset", "SliceSplit", "network_slice", "resize_slice", "restack",
    "scale_to_unit_range", "select_slices", "foreground_crop", "network_input_size",
    "LabelConvention", "label_convention", "find_brain_mask", "head_mask", "BrainLabeld",
    "BrainAsLabeld", "ForegroundNormalized", "LoadOptionalImaged", "SelectChanneld", "ToPseudoIntensityd",
    "plain_tensor", "same_type_as", "stored_label_values", "synthesised_channels",
    "MapToSharedLabelsd", "UnpairedDataset", "check_unpaired", "domain_transforms", "intensity_transform",
    "shared_label_mapping",
    "ValidateLabelMapd", "ValidateVolumed", "check_image", "check_label", "check_pair", "load_volume",
    "validate_datalist",
    "datalist_problems",
]
