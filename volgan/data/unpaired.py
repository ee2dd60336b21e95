"""Unpaired two-domain data for the cycle/shape GAN (P2): shared label space, an epoch over the larger domain."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.utils import set_rnd
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    RandCropByLabelClassesd,
    Randomizable,
    ScaleIntensityRanged,
    ScaleIntensityRangePercentilesd,
    SpatialPadd,
)
from torch.utils.data import Dataset

from volgan.data.transforms import LoadOptionalImaged, same_type_as
from volgan.data.validate import ValidateVolumed, check_image, check_label, check_pair, load_volume, source_path
from volgan.errors import VolganConfigError, VolganDataError

__all__ = ["MapToSharedLabelsd", "UnpairedDataset", "check_unpaired", "domain_transforms", "intensity_transform",
           "require_label_map", "shared_label_mapping"]


def shared_label_mapping(names: Mapping[Any, str], classes: Sequence[str]) -> dict[int, int]:
    """Map a domain's label ids to a shared space by organ name: ``classes[k]`` -> k + 1 (0 = background).

    Example: CT ``{"5": "liver"}`` and MRI ``{"5": "liver"}`` with ``classes=["spleen", "liver"]`` both give 5 -> 2.
    """
    by_name = {str(v): int(k) for k, v in names.items()}
    missing = [c for c in classes if c not in by_name]
    if missing:
        raise VolganConfigError(f"classes {missing} are not in this domain's label names")
    return {by_name[c]: i + 1 for i, c in enumerate(classes)}


class MapToSharedLabelsd(MapTransform):
    """Map domain label ids to the shared space; ids not in ``mapping`` become 0 (``unmapped="background"``) or
    raise ``VolganDataError`` naming the file (``unmapped="error"``)."""

    def __init__(self, keys: KeysCollection, mapping: Mapping[Any, int], num_classes: int,
                 unmapped: str = "background", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.mapping = {int(k): int(v) for k, v in dict(mapping).items()}
        bad = {k: v for k, v in self.mapping.items() if not 0 <= v < num_classes}
        if bad:
            raise VolganConfigError(f"label mapping targets {bad} are outside the shared space 0..{num_classes - 1}")
        if unmapped not in ("background", "error"):
            raise VolganConfigError(f"unmapped must be 'background' or 'error', got {unmapped!r}")
        self.num_classes, self.unmapped = num_classes, unmapped

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = torch.as_tensor(d[key])
            values = torch.unique(lab).long().tolist()
            extra = [v for v in values if v not in self.mapping and v != 0]
            if extra and self.unmapped == "error":
                raise VolganDataError(source_path(d[key]), f"label values {extra} have no entry in the label mapping")
            # map through the values present (no lookup table of max(label) + 1 entries: a label value near the
            # integer limit must not ask for gigabytes)
            present, inverse = torch.unique(lab.long(), return_inverse=True)
            mapped = torch.tensor([self.mapping.get(int(v), 0) for v in present], dtype=torch.long)
            d[key] = same_type_as(mapped[inverse].numpy(), d[key])
        return d


def require_label_map(mapping: Mapping[Any, int] | None, option: str) -> dict[int, int]:
    """A domain's ``{domain id: shared id}`` mapping, or one line saying how to give it: P2 compares label maps of
    two datasets whose ids rarely mean the same (TotalSegmentator CT and MR ids differ; a lung tumour 1 and a
    brain tumour 1 are not one class), so there is no default mapping (issue #21)."""
    if mapping is None:
        raise VolganConfigError(
            f"--{option} is not set: give the mapping from this domain's label ids to the shared classes, e.g. "
            f"--{option} \"{{5: 1, 1: 2}}\" (liver, spleen), or derive it from label names with "
            "volgan.data.shared_label_mapping(names, classes); ids not listed become background")
    try:
        return {int(k): int(v) for k, v in dict(mapping).items()}
    except (TypeError, ValueError) as e:
        raise VolganConfigError(f"--{option} must map label ids to shared ids (integers), got {mapping!r}") from e


def check_unpaired(a_items: Sequence[Mapping], b_items: Sequence[Mapping], map_a: Mapping | None,
                   map_b: Mapping | None, spatial_dims: int = 3) -> None:
    """Both domains, before anything is cached or trained: every image and label map readable and checked
    (``check_image``/``check_label``/``check_pair``: dims, NaN/Inf, one-channel integer labels, matching geometry),
    the same number of spatial dims, and some shared-class foreground after mapping (else the label spaces do not
    match: give the mappings). Label values outside a mapping are allowed (they become background)."""
    maps = {"A": require_label_map(map_a, "label_map_a"), "B": require_label_map(map_b, "label_map_b")}
    for name, items, mapping in (("A", a_items, maps["A"]), ("B", b_items, maps["B"])):
        found = set()
        keys = mapping
        for it in items:
            img = load_volume(it["image"])
            nd = img.ndim - (1 if img.ndim == spatial_dims + 1 and img.shape[-1] == 1 else 0)
            if nd != spatial_dims:
                raise VolganDataError(it["image"], f"domain {name}: expected {spatial_dims} spatial dims, got shape "
                                      f"{tuple(img.shape)} (both domains must have the same number of dims)")
            check_image(img, str(it["image"]), spatial_dims, require_contrast=True)
            lab = load_volume(it["label"])
            check_label(lab, str(it["label"]), None, spatial_dims, require_foreground=False)
            check_pair(img, lab, str(it["image"]), str(it["label"]))
            values = set(int(v) for v in torch.unique(torch.as_tensor(lab)))
            found |= {keys[v] for v in values if v in keys} - {0}
        if not found:
            raise VolganDataError(items[0]["label"] if items else None,
                                  f"domain {name} has none of the shared classes after mapping {dict(mapping)}: "
                                  "the label spaces do not match")


class UnpairedDataset(Randomizable, Dataset):
    """Pairs of independent samples from two datasets: item i is ``i``-th of the larger domain and a uniformly
    drawn item of the other (P2: "an epoch walks the larger domain"). Keys get the prefixes ``a_`` and ``b_``.

    Each sub-dataset returns a dict or a one-element list of dicts (MONAI crops with ``num_samples=1``).
    """

    def __init__(self, dataset_a: Dataset, dataset_b: Dataset, seed: int = 0):
        if len(dataset_a) == 0 or len(dataset_b) == 0:
            raise VolganConfigError("both domains need at least one case")
        self.a, self.b = dataset_a, dataset_b
        self.set_random_state(seed=seed)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        """Seed the draw of the other domain's item and (with ``seed``) the random transforms of both domains
        (MONAI's ``set_rnd`` stops at the first object with a random state: this one)."""
        super().set_random_state(seed=seed, state=state)
        if seed is not None:
            set_rnd(self.a, seed + 1)
            set_rnd(self.b, seed + 2)
        return self

    def __len__(self) -> int:
        return max(len(self.a), len(self.b))

    def randomize(self, data: Any = None) -> int:
        return int(self.R.randint(min(len(self.a), len(self.b))))

    @staticmethod
    def _one(x: Any) -> dict:
        return x[0] if isinstance(x, list) else x

    def __getitem__(self, i: int) -> dict:
        j = self.randomize()
        ia, ib = (i, j) if len(self.a) >= len(self.b) else (j, i)
        a, b = self._one(self.a[ia]), self._one(self.b[ib])
        return {**{f"a_{k}": v for k, v in a.items()}, **{f"b_{k}": v for k, v in b.items()}}


def intensity_transform(keys: KeysCollection, spec: Mapping[str, Any]):
    """Map a domain's intensities to [-1, 1] (tanh range of the generators).

    ``{"kind": "range", "a_min": -200, "a_max": 400}`` (CT window in HU, clipped) or
    ``{"kind": "percentile", "lower": 0.5, "upper": 99.5}`` (MRI, per volume, clipped).
    """
    kind = spec.get("kind", "percentile")
    if kind == "range":
        return ScaleIntensityRanged(keys, a_min=float(spec["a_min"]), a_max=float(spec["a_max"]), b_min=-1.0,
                                    b_max=1.0, clip=True)
    if kind == "percentile":
        return ScaleIntensityRangePercentilesd(keys, lower=float(spec.get("lower", 0.5)),
                                               upper=float(spec.get("upper", 99.5)), b_min=-1.0, b_max=1.0, clip=True)
    raise VolganConfigError(f"intensity kind must be 'range' or 'percentile', got {kind!r}")


def domain_transforms(intensity: Mapping[str, Any], mapping: Mapping[Any, int] | None, num_classes: int,
                      patch_size: Sequence[int] | None = None, spatial_dims: int = 3, label: bool = True,
                      unmapped: str = "background", option: str = "label_map"):
    """One domain's pipeline: load, check, shared labels, intensities to [-1, 1]; with ``patch_size`` a padded,
    foreground-balanced random crop (``RandCropByLabelClassesd``). ``label="optional"``: a label is used when the
    item has one (inference on images with or without labels; labels are mapped only when a mapping is given);
    with labels, ``mapping`` is required (``require_label_map``; ``option`` names it in the error)."""

    optional = label == "optional"
    if label and not optional:
        mapping = require_label_map(mapping, option)
    keys = ["image", "label"] if label else ["image"]
    load = dict(image_only=True, ensure_channel_first=True)
    xf: list = [LoadImaged(keys="image", **load), LoadOptionalImaged(keys="label", **load)] if optional \
        else [LoadImaged(keys=keys, **load)]
    xf.append(ValidateVolumed(keys="image", label_key="label" if label else None, spatial_dims=spatial_dims,
                              require_foreground=False))
    if label and mapping is not None:
        xf.append(MapToSharedLabelsd("label", mapping, num_classes, unmapped, allow_missing_keys=optional))
    xf.append(intensity_transform("image", intensity))
    if patch_size is not None:
        xf += [EnsureTyped(keys=keys, track_meta=False),
               SpatialPadd(keys="image", spatial_size=list(patch_size), value=-1.0),
               SpatialPadd(keys="label", spatial_size=list(patch_size)),
               RandCropByLabelClassesd(keys=keys, label_key="label", spatial_size=list(patch_size),
                                       num_classes=num_classes, ratios=[1.0] * num_classes, num_samples=1, warn=False)]
    return Compose(xf)
