"""Input validation: every bad volume or pair becomes one ``VolganDataError`` naming the file and the problem."""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform

from volgan.data.datalist import VOLUME_SUFFIXES, is_dicom_dir, volume_suffix
from volgan.errors import VolganDataError

__all__ = [
    "load_volume",
    "check_image",
    "check_label",
    "check_pair",
    "validate_datalist",
    "ValidateVolumed",
    "ValidateLabelMapd",
    "source_path",
]


def source_path(x: Any, default: str = "<in-memory>") -> str:
    """The file a MetaTensor was loaded from, for error messages."""
    if isinstance(x, MetaTensor):
        name = x.meta.get("filename_or_obj")
        if name:
            return str(name)
    return default


def load_volume(path: str | os.PathLike, reader: str | None = None) -> MetaTensor:
    """Load one image with MONAI's ``LoadImage`` (channel-first); unreadable files raise ``VolganDataError``."""
    p = Path(path)
    if not p.exists():
        raise VolganDataError(p, "file does not exist")
    if p.is_dir():
        if not is_dicom_dir(p):
            raise VolganDataError(p, "is a folder but not a DICOM series")
    else:
        if p.stat().st_size == 0:
            raise VolganDataError(p, "empty file (0 bytes)")
        if volume_suffix(p) is None:
            raise VolganDataError(p, f"unsupported file type (expected one of {', '.join(VOLUME_SUFFIXES)})")
    try:
        img = LoadImage(reader=reader, image_only=True, ensure_channel_first=False)(str(p))
    except Exception as e:  # noqa: BLE001 - every reader failure means the same thing to the user
        raise VolganDataError(p, f"unreadable or corrupt image ({type(e).__name__}: {_reader_message(e, p)})") from e
    return img


def _reader_message(e: BaseException, path: Path, limit: int = 200) -> str:
    """One line from a reader's (often multi-line) message: ITK puts the cause on the last line, nibabel on the
    first with continuation lines (" - could the file be damaged?"), so the last line is kept together with the
    lines it continues. The file's full path is shortened to its name (the error already starts with it)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    end = len(lines) - 1
    start = end
    while start > 0 and lines[start].startswith(("-", "(")):
        start -= 1
    msg = " ".join(lines[start:end + 1]).replace(str(path), path.name)
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _spatial(arr: torch.Tensor | np.ndarray, path: str, spatial_dims: int, channel_first: bool,
             channels: int | None = None) -> tuple[int, ...]:
    shape = tuple(arr.shape)
    if channel_first:
        if len(shape) != spatial_dims + 1:
            raise VolganDataError(path, f"expected {spatial_dims}D data with a channel dim, got shape {shape}")
        return shape[1:]
    if len(shape) == spatial_dims + 1 and (shape[-1] == 1 or (channels is not None and shape[-1] == channels)):
        return shape[:-1]
    if len(shape) != spatial_dims or (channels is not None and channels > 1):
        if len(shape) == spatial_dims + 1:
            want = f"{channels} channels" if channels else "one channel"
            kind = "a 2D image" if spatial_dims == 2 else f"a {spatial_dims}D volume"
            raise VolganDataError(path, f"expected {kind} with {want}, got {len(shape)}D shape {shape} (a "
                                  f"{len(shape)}D volume, or {shape[-1]} channels/time points; wrong dimension?)")
        if len(shape) == spatial_dims:
            raise VolganDataError(path, f"expected {channels} channels on the last axis, got a single-channel "
                                  f"{spatial_dims}D volume of shape {shape}")
        raise VolganDataError(path, f"expected a {spatial_dims}D volume, got {len(shape)}D shape {shape}")
    return shape


def check_image(
    img: torch.Tensor | np.ndarray, path: str | None = None, spatial_dims: int = 3, channel_first: bool = False,
    channels: int | None = None,
) -> None:
    """Number of dimensions (and channels: for non-channel-first data a last axis of ``channels``), no NaN/Inf."""
    path = path or source_path(img)
    _spatial(img, path, spatial_dims, channel_first, channels if not channel_first else None)
    if channel_first and channels is not None and img.shape[0] != channels:
        raise VolganDataError(path, f"expected {channels} channel(s), got {img.shape[0]} (shape {tuple(img.shape)})")
    t = torch.as_tensor(img)
    if t.is_floating_point():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise VolganDataError(path, f"contains {n_nan} NaN and {n_inf} Inf voxels")


def check_label(
    lab: torch.Tensor | np.ndarray, path: str | None = None, label_values: Iterable[int] | None = None,
    spatial_dims: int = 3, channel_first: bool = False, require_foreground: bool = True,
) -> None:
    """A label map: right dimensions, one channel, integer values, values in ``label_values``, some foreground."""
    path = path or source_path(lab)
    check_image(lab, path, spatial_dims, channel_first)
    if channel_first and lab.shape[0] != 1:
        raise VolganDataError(path, f"a label map has one channel, got {lab.shape[0]} (channel-first shape "
                              f"{tuple(lab.shape)}; a 4D file where a 3D label map is expected?)")
    t = torch.as_tensor(lab)
    if t.is_floating_point() and not bool((t == torch.round(t)).all()):
        raise VolganDataError(path, "label map has non-integer values (is this an image, not a label map?)")
    values = sorted(int(v) for v in torch.unique(t))
    if label_values is not None:
        allowed = {int(v) for v in label_values}
        bad = [v for v in values if v not in allowed]
        if bad:
            raise VolganDataError(path, f"label values {bad} not in the configured set {sorted(allowed)}")
    if require_foreground and values == [0]:
        raise VolganDataError(path, "empty label map (only background 0)")


def check_pair(image: torch.Tensor, label: torch.Tensor, image_path: str | None = None, label_path: str | None = None,
               atol_mm: float = 1e-3, channel_first: bool = False) -> None:
    """Image and label share the spatial shape and the affine (to ``atol_mm``)."""
    image_path = image_path or source_path(image)
    label_path = label_path or source_path(label)
    si = tuple(image.shape[1:] if channel_first else image.shape)
    sl = tuple(label.shape[1:] if channel_first else label.shape)
    si = si[: len(sl)] if not channel_first and len(si) == len(sl) + 1 else si  # multi-modal image (H, W, D, C)
    sl = sl[:-1] if len(sl) > len(si) and sl[-1] == 1 else sl
    if si != sl:
        raise VolganDataError(label_path, f"shape {sl} does not match image {image_path} shape {si}")
    if isinstance(image, MetaTensor) and isinstance(label, MetaTensor):
        a, b = image.affine.double(), label.affine.double()
        if a.shape != b.shape or not torch.allclose(a, b, atol=atol_mm):
            diff = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
            raise VolganDataError(label_path, f"affine differs from image {image_path} (max diff {diff:.4g})")


def validate_datalist(
    items: Sequence[Mapping[str, Any]],
    image_key: str | None = "image",
    label_key: str | None = "label",
    spatial_dims: int = 3,
    label_values: Iterable[int] | None = None,
    require_foreground: bool = True,
    image_channels: int | None = None,
) -> list[dict]:
    """Load and check every entry (image, label, pair) before anything is trained or written; returns the items.

    ``image_channels``: modalities stacked on the last axis of 4D images (e.g. 4 for decathlon BraTS);
    ``None`` accepts single-channel volumes only.
    """
    out = []
    for item in items:
        img = lab = None
        if image_key:
            img = load_volume(item[image_key])
            check_image(img, str(item[image_key]), spatial_dims, channels=image_channels)
        if label_key:
            lab = load_volume(item[label_key])
            check_label(lab, str(item[label_key]), label_values, spatial_dims, require_foreground=require_foreground)
        if img is not None and lab is not None:
            check_pair(img, lab, str(item[image_key]), str(item[label_key]))
        out.append(dict(item))
    return out


class ValidateVolumed(MapTransform):
    """Dictionary transform that checks loaded, channel-first data (see ``check_image``/``check_label``/``check_pair``).

    Args:
        keys: image keys (dimensions, NaN/Inf).
        label_key: label map key (also integer values in ``label_values``, foreground, geometry vs ``keys``).
        spatial_dims: expected spatial dims.
        channels: expected channels of the images (``None``: any).
    """

    def __init__(self, keys: KeysCollection, label_key: str | None = "label", spatial_dims: int = 3,
                 label_values: Sequence[int] | None = None, require_foreground: bool = True,
                 channels: int | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.spatial_dims = spatial_dims
        self.label_values = label_values
        self.require_foreground = require_foreground
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            check_image(d[key], None, self.spatial_dims, channel_first=True, channels=self.channels)
        if self.label_key and self.label_key in d:
            lab = d[self.label_key]
            check_label(lab, None, self.label_values, self.spatial_dims, channel_first=True,
                        require_foreground=self.require_foreground)
            for key in self.key_iterator(d):
                check_pair(d[key], lab, channel_first=True)
        return d


class ValidateLabelMapd(MapTransform):
    """Dictionary transform that checks loaded, channel-first label maps (``check_label``) under ``keys``."""

    def __init__(self, keys: KeysCollection, spatial_dims: int = 3, label_values: Sequence[int] | None = None,
                 require_foreground: bool = True, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.spatial_dims, self.label_values, self.require_foreground = spatial_dims, label_values, require_foreground

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            check_label(d[key], None, self.label_values, self.spatial_dims, channel_first=True,
                        require_foreground=self.require_foreground)
        return d
