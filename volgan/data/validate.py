"""Input validation: every bad volume or pair becomes one ``VolganDataError`` naming the file and the problem."""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImage, MapTransform

from volgan.data.conventions import LabelConvention
from volgan.data.datalist import VOLUME_SUFFIXES, is_dicom_dir, volume_suffix
from volgan.errors import VolganDataError

__all__ = [
    "datalist_problems",
    "MAX_VOXELS",
    "MAX_LABEL_VALUE",
    "header_shape",
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


#: voxels a file may claim before anything is read (``VOLGAN_MAX_VOXELS``; 2^28 ~ 1 GiB of float32)
MAX_VOXELS = int(os.environ.get("VOLGAN_MAX_VOXELS", 2**28))
#: the largest label value accepted (label maps are stored as integers; atlases use a few thousand)
MAX_LABEL_VALUE = 65535
#: intensities beyond this are a broken scaling (a wrong scl_slope, a raw float overflow), not an image
MAX_INTENSITY = 1e12


def _check_affine(aff: np.ndarray | torch.Tensor, path: str | os.PathLike) -> None:
    aff = torch.as_tensor(np.asarray(aff), dtype=torch.float64)
    if not bool(torch.isfinite(aff).all()):
        raise VolganDataError(path, "the affine (voxel -> world) is not finite (NaN/Inf in the header)")
    if abs(float(torch.linalg.det(aff[:-1, :-1]))) < 1e-12:
        raise VolganDataError(path, "the affine (voxel -> world) is singular (zero spacing or a degenerate "
                              "orientation in the header)")


def header_shape(path: Path) -> tuple[int, ...] | None:
    """The grid a file's header claims, read without loading the voxels (NIfTI through nibabel, other formats and
    DICOM series through SimpleITK); ``None`` when the header cannot be read here (the reader then reports it).

    A NIfTI header whose affine (nibabel's best affine: sform, else qform, else pixdim) is not finite or singular is
    refused here: readers disagree on such files (ITK falls back to pixdim, nibabel keeps the broken matrix), so
    any reading of it would be a guess."""
    try:
        if path.is_dir():
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
            if len(series) > 1:
                raise VolganDataError(path, f"holds {len(series)} DICOM series ({', '.join(series[:3])}"
                                      f"{' ...' if len(series) > 3 else ''}): give the folder of one series")
            return None
        if volume_suffix(path) in (".nii", ".nii.gz"):
            header = nib.load(str(path)).header
            _check_affine(header.get_best_affine(), path)
            return tuple(int(s) for s in header.get_data_shape())
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return (*reader.GetSize(), reader.GetNumberOfComponents())
    except VolganDataError:
        raise
    except Exception:  # noqa: BLE001 - an unreadable header is the full reader's to report
        return None


def load_volume(path: str | os.PathLike, reader: str | None = None, max_voxels: int | None = None) -> MetaTensor:
    """Load one image with MONAI's ``LoadImage`` (channel-first); unreadable files raise ``VolganDataError``.

    The grid the header claims is checked first (``max_voxels``, default ``MAX_VOXELS``), so a small file that
    decompresses to gigabytes (a decompression bomb, a header claiming a huge grid) is refused before any
    allocation; a DICOM folder with several series is refused rather than one of them picked silently."""
    p = Path(path)
    if not p.exists():
        raise VolganDataError(p, "file does not exist" if not p.is_symlink() else "is a broken symbolic link")
    if p.is_dir():
        if not is_dicom_dir(p):
            raise VolganDataError(p, "is a folder but not a DICOM series")
    else:
        if p.stat().st_size == 0:
            raise VolganDataError(p, "empty file (0 bytes)")
        if volume_suffix(p) is None:
            raise VolganDataError(p, f"unsupported file type (expected one of {', '.join(VOLUME_SUFFIXES)})")
    shape = header_shape(p)
    limit = MAX_VOXELS if max_voxels is None else int(max_voxels)
    if shape is not None and int(np.prod([max(s, 1) for s in shape], dtype=np.float64)) > limit:
        raise VolganDataError(p, f"the header claims a {'x'.join(map(str, shape))} grid "
                              f"({int(np.prod(shape, dtype=np.float64)):,} voxels), more than the limit {limit:,} "
                              "(set VOLGAN_MAX_VOXELS to allow larger volumes)")
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
    channels: int | None = None, require_contrast: bool = False,
) -> None:
    """Number of dimensions (and channels: for non-channel-first data a last axis of ``channels``), a grid of at
    least 2 voxels along two axes, a usable affine (finite, not singular), no NaN/Inf, no intensities beyond
    ``MAX_INTENSITY``; with ``require_contrast`` an image that is not constant."""
    path = path or source_path(img)
    spatial = _spatial(img, path, spatial_dims, channel_first, channels if not channel_first else None)
    if channel_first and channels is not None and img.shape[0] != channels:
        raise VolganDataError(path, f"expected {channels} channel(s), got {img.shape[0]} (shape {tuple(img.shape)})")
    if sum(int(s) >= 2 for s in spatial) < min(2, spatial_dims):
        raise VolganDataError(path, f"a grid of {'x'.join(map(str, spatial))} voxels is too small to be an image")
    if isinstance(img, MetaTensor):
        _check_affine(img.affine, path)
    t = torch.as_tensor(img)
    if t.is_floating_point():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int((~finite).sum()) - n_nan
            raise VolganDataError(path, f"contains {n_nan} NaN and {n_inf} Inf voxels")
    if t.numel():
        peak = float(t.abs().max())
        if peak > MAX_INTENSITY:
            raise VolganDataError(path, f"intensities up to {peak:.3g} (beyond {MAX_INTENSITY:g}): a broken scaling "
                                  "(scl_slope) or a corrupt file, not an image")
        if require_contrast and float(t.max()) == float(t.min()):
            raise VolganDataError(path, f"the image is constant ({float(t.max()):g} everywhere): nothing to learn")


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
    if values[0] < 0 or values[-1] > MAX_LABEL_VALUE:
        raise VolganDataError(path, f"label values from {values[0]} to {values[-1]}: label maps hold values 0 .. "
                              f"{MAX_LABEL_VALUE} (negative or huge values are a corrupt or non-label file)")
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


def _entry_problems(item: Mapping[str, Any], image_key: str | None, label_key: str | None, spatial_dims: int,
                    label_values: Iterable[int] | None, require_foreground: bool,
                    image_channels: int | None, convention: LabelConvention | None = None,
                    brain_added: bool = False) -> Iterator[VolganDataError]:
    """The problems of one entry, lazily: the image, then the label map (each on its own, the label map also against
    the bundle's ``convention``), then the pair when both pass. Stopping at the first is ``validate_datalist``;
    collecting them all is ``datalist_problems``."""
    checked = {}
    for key, kind in ((image_key, "image"), (label_key, "label")):
        if not key:
            continue
        try:
            vol = load_volume(item[key])
            if kind == "image":
                check_image(vol, str(item[key]), spatial_dims, channels=image_channels, require_contrast=True)
            else:
                check_label(vol, str(item[key]), label_values, spatial_dims, require_foreground=require_foreground)
                if convention is not None:
                    convention.check(torch.unique(torch.as_tensor(vol)).tolist(), str(item[key]),
                                     added=brain_added or "brain_mask" in item)
            checked[kind] = vol
        except VolganDataError as e:
            yield e
    if len(checked) == 2:
        try:
            check_pair(checked["image"], checked["label"], str(item[image_key]), str(item[label_key]))
        except VolganDataError as e:
            yield e


def validate_datalist(
    items: Sequence[Mapping[str, Any]],
    image_key: str | None = "image",
    label_key: str | None = "label",
    spatial_dims: int = 3,
    label_values: Iterable[int] | None = None,
    require_foreground: bool = True,
    image_channels: int | None = None,
    convention: LabelConvention | None = None,
    brain_added: bool = False,
) -> list[dict]:
    """Load and check every entry (image, label, pair) before anything is trained or written; returns the items.
    The first problem is raised.

    ``image_channels``: modalities stacked on the last axis of 4D images (e.g. 4 for decathlon BraTS);
    ``None`` accepts single-channel volumes only. ``convention``: the bundle's label convention
    (``volgan.data.label_convention``), its required labels added by the run when ``brain_added`` (or the entry's
    ``brain_mask``).
    """
    for item in items:
        first = next(_entry_problems(item, image_key, label_key, spatial_dims, label_values, require_foreground,
                                     image_channels, convention, brain_added), None)
        if first is not None:
            raise first
    return [dict(item) for item in items]


def datalist_problems(
    items: Sequence[Mapping[str, Any]],
    image_key: str | None = "image",
    label_key: str | None = "label",
    spatial_dims: int = 3,
    label_values: Iterable[int] | None = None,
    require_foreground: bool = True,
    image_channels: int | None = None,
    convention: LabelConvention | None = None,
    brain_added: bool = False,
) -> list[VolganDataError]:
    """Every problem of every entry (``volgan check-data``): each image and each label map checked on its own (and
    against ``convention``, as ``validate_datalist``), the pair when both pass; one ``VolganDataError`` per problem,
    in datalist order ([] when all are fine)."""
    return [e for item in items for e in _entry_problems(item, image_key, label_key, spatial_dims, label_values,
                                                         require_foreground, image_channels, convention,
                                                         brain_added)]


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
