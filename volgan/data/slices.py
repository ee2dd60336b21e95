"""Slice-wise machinery of the 2D pipelines (P3, P4, P5): 3D volumes -> 2D slice pairs, and 2D predictions -> 3D.

P3 segments 3D data slice by slice, resizes every slice to 256x256 (bicubic images, nearest labels), scales
intensities to [-1, 1], and stacks the 2D predictions back into volumes so Dice is taken in 3D. The 2D
preprocessing is defined here once (``scale_to_unit_range`` per volume, then ``network_slice`` per slice) and
used by training (``SliceDataset``) and by every slice-wise inference (``volgan.inferers.SlicewiseInferer``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from volgan.data.dataset import split_datalist
from volgan.data.validate import check_image, check_label, check_pair, load_volume
from volgan.errors import VolganDataError

__all__ = ["select_slices", "resize_slice", "scale_to_unit_range", "network_slice", "foreground_crop",
           "network_input_size", "ScaleToUnitRanged",
           "SliceDataset", "SliceSplit", "restack", "ForegroundMaskd", "UNIT_RANGE_PERCENTILES"]

#: per-volume intensity percentiles mapped to -1 and 1 (P3 and P5 scale intensities to [-1, 1])
UNIT_RANGE_PERCENTILES = (0.5, 99.5)


def select_slices(label: np.ndarray | torch.Tensor, axis: int = 2, empty_fraction: float = 0.0,
                  rng: np.random.RandomState | None = None) -> list[int]:
    """Indices along ``axis`` of the slices with foreground, plus ``empty_fraction`` x (their number) empty ones
    drawn at random (``empty_fraction=inf``: every slice)."""
    lab = np.asarray(label)
    if lab.ndim != 3:
        raise ValueError(f"expected a 3D label map, got shape {lab.shape}")
    other = tuple(a for a in range(3) if a != axis)
    has_fg = np.any(lab > 0, axis=other)
    fg = [int(i) for i in np.flatnonzero(has_fg)]
    empty = [int(i) for i in np.flatnonzero(~has_fg)]
    if np.isinf(empty_fraction):
        return list(range(lab.shape[axis]))
    n_empty = min(len(empty), int(round(len(fg) * max(empty_fraction, 0.0))))
    rng = rng or np.random.RandomState(0)
    chosen = sorted(rng.choice(empty, n_empty, replace=False).tolist()) if n_empty else []
    return sorted(fg + chosen)


def resize_slice(x: torch.Tensor, size: Sequence[int] | None, mode: str) -> torch.Tensor:
    """(C, H, W) -> (C, *size) with ``"bicubic"`` (images) or ``"nearest"`` (labels); ``size=None`` is identity."""
    if size is None or tuple(x.shape[-2:]) == tuple(size):
        return x
    kwargs = {"align_corners": False} if mode in ("bicubic", "bilinear") else {}
    return F.interpolate(x[None].float(), size=tuple(size), mode=mode, **kwargs)[0]


def scale_to_unit_range(img: torch.Tensor, lower: float = UNIT_RANGE_PERCENTILES[0],
                        upper: float = UNIT_RANGE_PERCENTILES[1]) -> torch.Tensor:
    """A whole volume's intensities: the ``lower`` / ``upper`` percentiles to -1 / 1, clipped (a constant volume
    becomes -1). The first half of the 2D preprocessing, per volume."""
    img = torch.as_tensor(img)
    lo, hi = torch.quantile(img.flatten().float(), torch.tensor([lower / 100.0, upper / 100.0]))
    if hi <= lo:
        return torch.zeros_like(img, dtype=torch.float32) - 1.0
    return ((img.float() - lo) / (hi - lo) * 2 - 1).clamp(-1, 1)


def network_slice(image: torch.Tensor, size: Sequence[int] | None) -> torch.Tensor:
    """A (C, H, W) image slice (already in [-1, 1]) as the 2D networks see it: resized to ``size`` (bicubic), the
    bicubic overshoot clipped back to [-1, 1]. The second half of the 2D preprocessing, per slice; a slice that
    needs no resizing passes unchanged."""
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image
    return resize_slice(image, size, "bicubic").clamp(-1, 1)


def foreground_crop(image: torch.Tensor, label: torch.Tensor, size: Sequence[int], fill: float = -1.0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, H, W) image and label cropped to ``size`` around the centre of the label's foreground bounding box (the
    slice's centre when it has none), the window moved inside the slice where it fits and padded (image ``fill``,
    label 0) where the slice is smaller: the field of view of ``crop_size`` in the 2D bundles (issue #21), so a
    small structure keeps its pixels instead of being resized away with the whole slice."""
    size = tuple(int(k) for k in size)
    fg = torch.nonzero(label[0] > 0)
    shape = tuple(image.shape[-2:])
    centre = ((fg.min(0).values + fg.max(0).values).float() / 2).tolist() if len(fg) else [(n - 1) / 2 for n in shape]
    starts = []
    for c, n, k in zip(centre, shape, size):
        s = int(round(c - (k - 1) / 2))
        starts.append(max(0, min(s, n - k)) if n >= k else -((k - n) // 2))
    pads = []  # F.pad order: last axis first, (before, after)
    for s, n, k in reversed(list(zip(starts, shape, size))):
        pads += [max(0, -s), max(0, s + k - n)]
    img = F.pad(image.float(), pads, value=float(fill)) if any(pads) else image
    lab = F.pad(label, pads, value=0) if any(pads) else label
    (y0, x0) = (max(s, 0) for s in starts)
    return img[..., y0:y0 + size[0], x0:x0 + size[1]], lab[..., y0:y0 + size[0], x0:x0 + size[1]]


def network_input_size(image_size: Sequence[int] | None, crop_size: Sequence[int] | None) -> list[int] | None:
    """The in-plane size a 2D bundle's networks see: the crop when ``crop_size`` is set, else ``image_size``."""
    size = crop_size or image_size
    return None if size is None else [int(k) for k in size]


class ScaleToUnitRanged(MapTransform):
    """Dictionary form of ``scale_to_unit_range`` for inference pipelines (keeps a MetaTensor's geometry)."""

    def __init__(self, keys: KeysCollection = "image", lower: float = UNIT_RANGE_PERCENTILES[0],
                 upper: float = UNIT_RANGE_PERCENTILES[1], allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.lower, self.upper = float(lower), float(upper)

    def __call__(self, data: Mapping[Any, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            out = scale_to_unit_range(x.as_tensor() if isinstance(x, MetaTensor) else x, self.lower, self.upper)
            d[key] = MetaTensor(out, meta=x.meta, applied_operations=x.applied_operations) \
                if isinstance(x, MetaTensor) else out
        return d


class SliceDataset(Dataset):
    """2D (image, label) slices of a datalist of 3D volumes (or 2D images), for the 2D pipelines.

    Each volume is loaded and checked once (``VolganDataError`` naming the file), its intensities scaled to
    [-1, 1] per volume (``percentiles``), slices along ``axis`` with foreground kept plus ``empty_fraction`` of
    empty ones, and each slice resized to ``size`` (bicubic image, nearest label; ``None`` keeps the size).
    Items: ``{"image": (1, H, W), "label": (1, H, W), "case": index, "slice": index}``; 2D inputs give one slice.

    Args:
        items: datalist entries with "image" and "label".
        axis: slicing axis of the 3D volumes (2 = axial for RAS-like volumes).
        size: in-plane size after resizing (P3: 256x256).
        empty_fraction: share of empty slices kept, relative to the foreground slices.
        label_values: allowed label values (checked).
        transform: optional callable applied to each item dict (MONAI dictionary transforms).
        spatial_dims: 2 or 3 to require 2D images or 3D volumes (``VolganDataError`` otherwise); ``None``
            accepts both.
        foreground: label values of the structure; slices are selected by them, and a volume without any of
            them is an error (``None``: every label > 0).
        crop: after resizing, each slice cropped to this size around its foreground (``foreground_crop``);
            ``size=None`` with ``crop`` trains on the native in-plane resolution.
    """

    def __init__(self, items: Sequence[Mapping[str, Any]], axis: int = 2, size: Sequence[int] | None = (256, 256),
                 empty_fraction: float = 0.1, percentiles: tuple[float, float] = UNIT_RANGE_PERCENTILES,
                 label_values: Sequence[int] | None = None, transform: Callable | None = None, seed: int = 0,
                 spatial_dims: int | None = None, foreground: Sequence[int] | None = None,
                 crop: Sequence[int] | None = None):
        self.transform = transform
        self.slices: list[dict[str, Any]] = []
        rng = np.random.RandomState(seed)
        for ci, item in enumerate(items):
            img, lab = load_volume(item["image"]), load_volume(item["label"])
            dims = spatial_dims or (2 if np.asarray(lab).ndim == 2 else 3)
            check_image(img, str(item["image"]), dims, require_contrast=True)
            check_label(lab, str(item["label"]), label_values, dims)
            check_pair(img, lab, str(item["image"]), str(item["label"]))
            img_t = torch.as_tensor(np.asarray(img), dtype=torch.float32)
            lab_t = torch.as_tensor(np.asarray(lab)).long()
            if lab_t.ndim == dims + 1 and lab_t.shape[-1] == 1:
                lab_t = lab_t[..., 0]
            fg_t = lab_t > 0 if foreground is None else torch.isin(lab_t, torch.as_tensor(list(foreground)))
            if not bool(fg_t.any()):
                raise VolganDataError(str(item["label"]), f"empty mask: no voxel with a foreground label "
                                      f"{sorted(int(v) for v in foreground or [])} (label values "
                                      f"{sorted(int(v) for v in torch.unique(lab_t))})")
            if img_t.ndim == dims + 1:  # trailing singleton channel
                img_t = img_t[..., 0]
            img_t = scale_to_unit_range(img_t, *percentiles)
            if dims == 2:
                pairs = [(0, img_t, lab_t)]
            else:
                idx = select_slices(fg_t.numpy(), axis, empty_fraction, rng)
                pairs = [(i, img_t.select(axis, i), lab_t.select(axis, i)) for i in idx]
            for si, im2, lb2 in pairs:
                image, label = network_slice(im2[None], size), resize_slice(lb2[None].float(), size, "nearest").long()
                if crop is not None:
                    image, label = foreground_crop(image, label, crop)
                self.slices.append({"image": image, "label": label, "case": ci, "slice": si})
        if items and not self.slices:  # an empty datalist (an optional validation set not given) is an empty set
            raise VolganDataError(None, "no slices with foreground in the datalist")

    def __len__(self) -> int:
        return len(self.slices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        d = dict(self.slices[i])
        return self.transform(d) if self.transform is not None else d


class SliceSplit:
    """Training and validation slices of a datalist split by case (P4/P5's early stopping): ``train`` and ``val``
    are ``SliceDataset``s with the same slicing; the validation cases are ``val_items`` when given, else a
    ``val_fraction`` of the cases (``volgan.data.dataset.split_datalist``, seeded)."""

    def __init__(self, items: Sequence[Mapping[str, Any]], val_items: Sequence[Mapping[str, Any]] | None = None,
                 val_fraction: float = 0.2, seed: int = 0, axis: int = 2, size: Sequence[int] | None = (256, 256),
                 empty_fraction: float = 0.0, foreground: Sequence[int] | None = None,
                 transform: Callable | None = None, crop: Sequence[int] | None = None):
        self.train_items, self.val_items = ((list(items), list(val_items)) if val_items
                                            else split_datalist(items, val_fraction, seed,
                                                                remedy="add cases or pass --val_dataset_dir"))
        kw = dict(axis=axis, size=size, empty_fraction=empty_fraction, seed=seed, transform=transform,
                  foreground=foreground, crop=crop)
        self.train, self.val = SliceDataset(self.train_items, **kw), SliceDataset(self.val_items, **kw)


def restack(slices: Sequence[torch.Tensor], shape: Sequence[int], axis: int = 2, indices: Sequence[int] | None = None,
            mode: str = "nearest", fill: float = 0.0) -> torch.Tensor:
    """Stack 2D (C, h, w) slices back into a (C, *shape) volume along ``axis``, resizing each to the volume's
    in-plane size (``"nearest"`` for labels, ``"bicubic"`` for images). Slices not in ``indices`` get ``fill``."""
    shape = tuple(int(s) for s in shape)
    indices = list(range(shape[axis])) if indices is None else list(indices)
    if len(indices) != len(slices):
        raise ValueError(f"{len(slices)} slices for {len(indices)} indices")
    plane = tuple(s for a, s in enumerate(shape) if a != axis)
    c = slices[0].shape[0] if slices else 1
    out = torch.full((c, *shape), float(fill), dtype=slices[0].dtype if slices else torch.float32)
    for i, sl in zip(indices, slices):
        r = resize_slice(sl, plane, mode)
        out.select(axis + 1, i).copy_(r.to(out.dtype) if mode == "nearest" else r)
    return out


class ForegroundMaskd:
    """``data[key] = isin(data[key], foreground)`` as 0/1 (the binary tasks of P3 and P5: heart, prostate, liver, lung);
    with ``output_key`` the mask goes to a new key (float) and the label stays."""

    def __init__(self, key: str = "label", foreground: Sequence[int] | None = None, output_key: str | None = None,
                 dtype: torch.dtype = torch.long):
        self.key, self.output_key, self.dtype = key, output_key or key, dtype
        self.foreground = None if foreground is None else torch.as_tensor(list(foreground))

    def __call__(self, data: Mapping[str, Any]) -> dict:
        d = dict(data)
        lab = torch.as_tensor(d[self.key])
        fg = lab > 0 if self.foreground is None else torch.isin(lab, self.foreground)
        d[self.output_key] = fg.to(self.dtype)
        return d
