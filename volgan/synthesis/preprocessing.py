"""What a label-map-to-image generator is fed at synthesis (P1 Sec. V-D): the label map, checked against the bundle's
label convention, the brain label added as in training when asked (``BrainLabeld``), optionally with its lesion
perturbed (replayable: ``volgan.data.perturbation``), one-hot encoded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.inferers import Inferer
from monai.transforms import AsDiscreted, Compose, CopyItemsd, DeleteItemsd, EnsureTyped, LoadImaged

from volgan.config import as_bool
from volgan.data.conventions import LabelConvention
from volgan.data.datalist import list_inputs
from volgan.data.inputs import label_map_inputs
from volgan.data.masks import find_brain_mask
from volgan.data.perturbation import RandLesionPerturbd
from volgan.data.transforms import BrainLabeld, LoadOptionalImaged, stored_label_values
from volgan.data.validate import ValidateLabelMapd, load_volume
from volgan.errors import VolganConfigError
from volgan.inferers import synthesis_inferer

__all__ = ["synthesis_preprocessing", "synthesis_inputs", "perturbation_suffix", "fit_window", "VolumeSizedInferer"]

#: the item key of the image whose head mask gives the brain label at synthesis (``brain_as_label``)
SOURCE_IMAGE_KEY = "source_image"


def synthesis_inputs(source: Any, label_values: Sequence[int] | None = (0, 1, 2, 3, 4), spatial_dims: int = 3,
                     brain_as_label: Any = False, brain_mask: Any = None,
                     convention: LabelConvention | None = None) -> list[dict[str, str]]:
    """The label maps to synthesise from (``label_map_inputs``: every map checked first), each with what gives it the
    brain label as in training: ``brain_mask`` (a file, or a folder of ``<case>_brain_mask`` files), or with
    ``brain_as_label`` its image (the input must then be (image, label) pairs: a datalist or a folder of pairs).
    Without either, every label map is checked against ``convention`` (MM-GAN: 3 = rest of the brain) up front,
    so a map the generator would misread is one error naming the fix before anything is synthesised."""
    added = as_bool(brain_as_label) or bool(brain_mask)
    raw_values = stored_label_values(label_values, None, brain_as_label, brain_mask) if added and label_values \
        else label_values
    items = label_map_inputs(source, raw_values, spatial_dims)
    if brain_mask:
        return [{**it, "brain_mask": find_brain_mask(brain_mask, it["image"])} for it in items]
    if as_bool(brain_as_label):
        images = list_inputs(source, key="image") if not isinstance(source, (list, tuple)) else \
            [x.get("image") if isinstance(x, dict) else None for x in source]
        if len(images) != len(items) or any(im is None or im == it["image"] for im, it in zip(images, items)):
            raise VolganConfigError(f"{source}: --brain_as_label needs each label map's image (its head mask gives "
                                    "label 3): give a datalist or a folder of (image, label) pairs as input, or "
                                    "--brain_mask FILE")
        return [{**it, SOURCE_IMAGE_KEY: str(im)} for it, im in zip(items, images)]
    if convention is not None and convention.required_values(label_values):
        for it in items:
            lab = torch.as_tensor(load_volume(it["image"]))
            convention.check(torch.unique(lab).tolist(), it["image"], label_values)
    return items


def synthesis_preprocessing(num_classes: int = 5, label_values: Sequence[int] | None = (0, 1, 2, 3, 4),
                            spatial_dims: int = 3, perturb: Any = False, perturb_args: Mapping | None = None,
                            seed: int | None = 0, validate: bool = True, brain_as_label: Any = False,
                            brain_mask: Any = None, convention: LabelConvention | None = None) -> Compose:
    """Label map in ``image`` -> one-hot network input in ``image``, the (brain-labelled, perturbed) label map kept
    in ``label``.

    ``brain_as_label`` / ``brain_mask`` add the brain label as training did (``BrainLabeld``: the head mask of the
    item's ``source_image``, or the item's ``brain_mask`` / ``brain_mask``); ``convention`` is checked after that
    (``synthesis_inputs`` makes such items). With ``perturb``, the lesion is deformed then (``RandLesionPerturbd``,
    seeded per case by ``seed`` and the file name: the same case gets the same perturbation in any run, sharded or
    not), for the augmentation workflow.
    """
    added = as_bool(brain_as_label) or bool(brain_mask)
    raw_values = stored_label_values(label_values, None, brain_as_label, brain_mask) if added and label_values \
        else label_values
    xforms: list = [LoadImaged(keys="image", image_only=True, ensure_channel_first=True),
                    LoadOptionalImaged(keys=SOURCE_IMAGE_KEY, image_only=True, ensure_channel_first=True)]
    if validate:
        xforms.append(ValidateLabelMapd(keys="image", spatial_dims=spatial_dims, label_values=raw_values))
    xforms += [CopyItemsd(keys="image", names="label"),
               BrainLabeld(keys="label", image_key=SOURCE_IMAGE_KEY, brain_as_label=brain_as_label,
                           brain_mask=brain_mask, convention=convention, label_values=label_values)]
    if as_bool(perturb):
        xforms.append(RandLesionPerturbd(keys="label", **{"case_seed": None if seed is None else int(seed),
                                                          **dict(perturb_args or {})}))
    xforms += [DeleteItemsd(keys=["image", SOURCE_IMAGE_KEY]), CopyItemsd(keys="label", names="image"),
               EnsureTyped(keys="image", dtype=torch.float32), AsDiscreted(keys="image", to_onehot=int(num_classes))]
    return Compose(xforms)


def perturbation_suffix(perturb: Any, seed: Any) -> str:
    """Output-name suffix of one perturbed synthesis (``_p<seed>``), so several of one label map share a folder."""
    return f"_p{int(seed)}" if as_bool(perturb) else ""


def fit_window(roi_size: Sequence[int], spatial_shape: Sequence[int], multiple: int = 16) -> list[int]:
    """A synthesis window no larger than the volume: per axis ``roi_size`` or the volume's size rounded up to a
    multiple of ``multiple`` (what the U-Net's down-sampling needs), whichever is smaller (a 25-slice volume gets
    32 slices, not 96)."""
    if len(roi_size) != len(spatial_shape):
        raise VolganConfigError(f"roi_size {list(roi_size)} has {len(roi_size)} axes, the volume {len(spatial_shape)}")
    m = int(multiple)
    return [min(int(r), -(-int(n) // m) * m) for r, n in zip(roi_size, spatial_shape)]


class VolumeSizedInferer(Inferer):
    """``volgan.inferers.synthesis_inferer`` with each input's window fitted to it (``fit_window``): ``roi_size`` is
    the largest window (the memory bound), never more than the volume needs.

    Args:
        roi_size, overlap, norm_stats, sw_batch_size: as ``synthesis_inferer``.
        multiple: windows are multiples of this (16: four U-Net levels, MM-GAN's ``16*n`` input).
    """

    def __init__(self, roi_size: Sequence[int] = (96, 96, 96), overlap: float = 0.5, norm_stats: str = "running",
                 sw_batch_size: int = 1, multiple: int = 16):
        super().__init__()
        self.roi_size, self.overlap, self.norm_stats = [int(r) for r in roi_size], float(overlap), norm_stats
        self.sw_batch_size, self.multiple = int(sw_batch_size), int(multiple)
        synthesis_inferer(self.roi_size, self.overlap, self.norm_stats, self.sw_batch_size)  # settings checked now

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        roi = fit_window(self.roi_size, inputs.shape[2:], self.multiple)
        return synthesis_inferer(roi, self.overlap, self.norm_stats, self.sw_batch_size)(inputs, network, *args,
                                                                                         **kwargs)
