"""Data: datalists, validation, method-specific transforms and the embedded sample set."""

from volgan.data.datalist import find_pairs, is_volume_file, list_inputs, load_datalist, write_datalist
from volgan.data.samples import SAMPLE_DIR, SUBJECTS, add_synthetic_lesion, make_sample_cases
from volgan.data.transforms import (
    BrainAsLabeld,
    ForegroundNormalized,
    LoadOptionalImaged,
    ToPseudoIntensityd,
    TumourPerturbd,
    perturb_lesion,
)
from volgan.data.validate import (
    ValidateLabelMapd,
    ValidateVolumed,
    check_image,
    check_label,
    check_pair,
    load_volume,
    validate_datalist,
)

__all__ = [
    "find_pairs", "is_volume_file", "list_inputs", "load_datalist", "write_datalist",
    "SAMPLE_DIR", "SUBJECTS", "add_synthetic_lesion", "make_sample_cases",
    "BrainAsLabeld", "ForegroundNormalized", "LoadOptionalImaged", "ToPseudoIntensityd", "TumourPerturbd", "perturb_lesion",
    "ValidateLabelMapd", "ValidateVolumed", "check_image", "check_label", "check_pair", "load_volume", "validate_datalist",
]

from volgan.data.dataset import resolve_dataset, split_datalist  # noqa: E402

__all__ += ["resolve_dataset", "split_datalist"]

from volgan.data.mixing import mix_datalists  # noqa: E402

__all__ += ["mix_datalists"]

from volgan.data.unpaired import (  # noqa: E402
    MapToSharedLabelsd,
    UnpairedDataset,
    check_unpaired,
    domain_transforms,
    intensity_transform,
    shared_label_mapping,
)

__all__ += ["MapToSharedLabelsd", "UnpairedDataset", "check_unpaired", "domain_transforms", "intensity_transform",
            "shared_label_mapping"]

from volgan.data.edges import CANNY_PRESETS, MaskWithEdgesd, canny_edges  # noqa: E402
from volgan.data.slices import ForegroundMaskd, SliceDataset, predict_slicewise, restack, select_slices  # noqa: E402

__all__ += ["CANNY_PRESETS", "MaskWithEdgesd", "canny_edges", "ForegroundMaskd", "SliceDataset", "predict_slicewise", "restack",
            "select_slices"]
