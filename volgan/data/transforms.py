"""Dictionary transforms specific to the methods (MONAI style, composable with MONAI's own)."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform

from volgan.config import as_bool
from volgan.data.conventions import LabelConvention
from volgan.data.masks import find_brain_mask, head_mask
from volgan.data.validate import load_volume, source_path
from volgan.errors import VolganDataError

__all__ = ["BrainLabeld", "BrainAsLabeld", "LoadOptionalImaged", "ForegroundNormalized", "ToPseudoIntensityd", "SelectChanneld",
           "same_type_as", "plain_tensor", "stored_label_values", "synthesised_channels"]

#: BraTS label values on disk (1 necrosis, 2 oedema, 4 enhancing); MM-GAN adds 3 = rest of the brain
BRATS_RAW_LABELS = (0, 1, 2, 4)


class LoadOptionalImaged(MapTransform):
    """``LoadImaged`` for keys an item may lack (the label of an image at inference, P2): loads what is there.

    A separate class rather than ``LoadImaged(allow_missing_keys=True)`` so that MONAI Label, which swaps every
    ``LoadImaged`` for its own loader (that requires each key), leaves it alone.
    """

    def __init__(self, keys: KeysCollection, **load_args: Any):
        super().__init__(keys, allow_missing_keys=True)
        self.loader = LoadImaged(keys, allow_missing_keys=True, **load_args)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self.loader(data)


def plain_tensor(x: Any) -> torch.Tensor:
    """A plain ``torch.Tensor`` (MetaTensor metadata dropped: cheaper ops, weights-only-safe checkpoints)."""
    t = torch.as_tensor(x)
    return t.as_subclass(torch.Tensor) if type(t) is not torch.Tensor else t


def same_type_as(new: np.ndarray, ref: Any) -> Any:
    """``new`` as the type of ``ref``: a MetaTensor keeps ``ref``'s metadata, a tensor its dtype and device."""
    if isinstance(ref, MetaTensor):
        out = MetaTensor(torch.as_tensor(new, dtype=ref.dtype), meta=ref.meta)
        out.applied_operations = list(ref.applied_operations)
        return out
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(new, dtype=ref.dtype, device=ref.device)
    return new.astype(ref.dtype, copy=False)


def stored_label_values(label_values: Sequence[int], label_mapping: Mapping[Any, int] | None = None,
                        brain_as_label: Any = False, brain_mask: Any = None) -> list[int]:
    """The label values the files on disk may hold, given what the method works with (MM-GAN's ``label_values``):
    the keys of ``label_mapping`` when one is given, BraTS' raw {0, 1, 2, 4} with ``brain_as_label`` or
    ``brain_mask`` (label 3 is added from the image or the mask), else ``label_values`` themselves."""
    if label_mapping:
        return sorted(int(k) for k in label_mapping)
    return list(BRATS_RAW_LABELS) if as_bool(brain_as_label) or brain_mask else [int(v) for v in label_values]


def synthesised_channels(image_channels: int | None = None, modality: int | None = None) -> int:
    """Output channels of a label-map-to-image generator: one modality (``modality`` of ``image_channels``
    stacked ones, or single-channel images), or all ``image_channels`` at once (``modality`` ``None``)."""
    return 1 if modality is not None or not image_channels else int(image_channels)


class SelectChanneld(MapTransform):
    """Keep one channel (``channel``) of channel-first data, e.g. the modality a model synthesises (one model per
    modality, as MM-GAN); ``channel=None`` keeps all."""

    def __init__(self, keys: KeysCollection = "image", channel: int | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.channel = None if channel is None else int(channel)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.channel is None:
            return d
        for key in self.key_iterator(d):
            if not 0 <= self.channel < d[key].shape[0]:
                raise VolganDataError(source_path(d[key]), f"has {d[key].shape[0]} channel(s), modality "
                                      f"{self.channel} was asked for")
            d[key] = d[key][self.channel:self.channel + 1]
        return d


class BrainLabeld(MapTransform):
    """MM-GAN's "rest of the brain" label (P1 Sec. V-A: ``brain_label`` 3) from one explicit source, then the
    bundle's label convention checked, with the same rule in training and synthesis.

    The source, in this order: the item's ``mask_key`` entry (a mask file or array, e.g. a datalist's
    ``brain_mask``); ``brain_mask`` (a mask file, or a folder of ``<case>_brain_mask`` files:
    ``volgan.data.masks.find_brain_mask``); with ``brain_as_label``, ``head_mask`` of the item's ``image_key``
    (skull-stripped scans: the brain; raw scans: the head). Label-0 voxels inside the mask become ``brain_label``;
    a label map that already holds it is refused. Without a source, the label maps must already hold it: with
    ``convention`` (``volgan.data.label_convention``), a label map missing a required value of ``label_values``
    is one ``VolganDataError`` naming the options that fix it.
    """

    def __init__(self, keys: KeysCollection = "label", image_key: str = "image", brain_label: int = 3,
                 brain_as_label: Any = False, brain_mask: str | os.PathLike | None = None,
                 mask_key: str = "brain_mask", convention: LabelConvention | None = None,
                 label_values: Sequence[int] | None = None, threshold: float | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.brain_label, self.mask_key = image_key, int(brain_label), mask_key
        self.brain_as_label, self.brain_mask = as_bool(brain_as_label), (str(brain_mask) if brain_mask else None)
        self.convention, self.label_values = convention, label_values
        self.threshold = None if threshold is None else float(threshold)

    def _mask(self, d: Mapping[Hashable, Any], key: Hashable, lab: np.ndarray) -> np.ndarray | None:
        given = d.get(self.mask_key)
        if given is None and self.brain_mask:
            given = find_brain_mask(self.brain_mask, source_path(d[key]))
        if given is not None:
            where = str(given) if isinstance(given, (str, os.PathLike)) else source_path(given)
            given = load_volume(given) if isinstance(given, (str, os.PathLike)) else given
            if isinstance(given, MetaTensor) and isinstance(d[key], MetaTensor) and not torch.allclose(
                    given.affine.double(), d[key].affine.double(), atol=1e-3):
                raise VolganDataError(where, f"brain mask's affine differs from label map {source_path(d[key])}'s")
            mask = np.asarray(given)
            mask = mask.reshape(mask.shape[:lab.ndim - 1]) if mask.ndim == lab.ndim and mask.shape[-1] == 1 else mask
            mask = mask[0] if mask.ndim == lab.ndim else mask
            if mask.shape != lab.shape[1:]:
                raise VolganDataError(where, f"brain mask of shape {mask.shape} does not match label map "
                                      f"{source_path(d[key])} of shape {lab.shape[1:]}")
            return mask > 0
        if not self.brain_as_label:
            return None
        image = np.asarray(d[self.image_key])
        if self.threshold is not None:
            return np.any(np.abs(image) > self.threshold, axis=0)
        return head_mask(image)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = np.asarray(d[key])
            mask = self._mask(d, key, lab)
            if mask is not None:
                if np.any(lab == self.brain_label):
                    raise VolganDataError(source_path(d[key]), f"already contains label {self.brain_label}; it is "
                                          "reserved for 'rest of the brain' (added by --brain_as_label / "
                                          "--brain_mask: drop that option, or relabel)")
                lab = np.where((lab == 0) & mask[None], self.brain_label, lab)
                d[key] = same_type_as(lab, d[key])
            if self.convention is not None:
                self.convention.check(np.unique(lab), source_path(d[key]), self.label_values)
        return d


class BrainAsLabeld(BrainLabeld):
    """``BrainLabeld`` from the image: label-0 voxels of the head mask become ``brain_label`` (MM-GAN Sec. V-A).

    ``threshold`` ``None`` (default): ``volgan.data.masks.head_mask`` (constant background or 3-class Otsu, largest
    component, holes filled); a number: the voxels with ``|image| > threshold`` in any channel (volgan < 0.2)."""

    def __init__(self, keys: KeysCollection = "label", image_key: str = "image", brain_label: int = 3,
                 threshold: float | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, image_key, brain_label, brain_as_label=True, threshold=threshold,
                         allow_missing_keys=allow_missing_keys)


class ForegroundNormalized(MapTransform):
    """Z-score the image inside the foreground, then map to the generator's tanh range.

    MM-GAN z-scores each modality (Sec. V-A); its generator ends in tanh, so the z-scores are divided by
    ``z_range`` and clipped to [-1, 1], and background is set to ``background`` (-1). With the default 3,
    voxels beyond 3 standard deviations saturate (a documented choice: ``z_range`` sets it). The foreground
    is ``label > 0`` when ``label_key`` is given, else the non-zero voxels of the image (skull-stripped MRI,
    and volgan's synthetic volumes, are 0 outside the brain). Each channel is normalised on its own.
    With ``scale=False`` plain z-scores are returned (background 0), e.g. for segmentors.
    """

    def __init__(self, keys: KeysCollection = "image", label_key: str | None = "label", z_range: float = 3.0,
                 background: float = -1.0, scale: bool = True, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if z_range <= 0:
            raise ValueError(f"z_range must be > 0, got {z_range}")
        self.label_key, self.z_range, self.background, self.scale = label_key, float(z_range), float(background), scale

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            img = np.asarray(d[key], dtype=np.float32)
            if self.label_key is not None:
                fg, where = np.asarray(d[self.label_key])[0] > 0, source_path(d[self.label_key])
            else:
                fg, where = np.any(img != 0, axis=0), source_path(d[key])
            if not fg.any():
                raise VolganDataError(where, "no foreground to normalise in (empty label map or all-zero image)")
            out = np.full_like(img, self.background if self.scale else 0.0)
            for c in range(img.shape[0]):
                vals = img[c][fg]
                std = float(vals.std())
                if std == 0:
                    raise VolganDataError(source_path(d[key]), "image is constant inside the foreground")
                z = (vals - vals.mean()) / std
                out[c][fg] = np.clip(z / self.z_range, -1.0, 1.0) if self.scale else z
            d[key] = same_type_as(out, d[key]) if isinstance(d[key], torch.Tensor) else out
            if isinstance(d[key], torch.Tensor):
                d[key] = d[key].float()
        return d


class ToPseudoIntensityd(MapTransform):
    """Generator output in [-1, 1] -> pseudo-MR intensities: ``offset + scale * z_range * x`` inside the
    foreground, 0 outside (skull-stripped convention, as BraTS and the real inputs).

    The inverse of ``ForegroundNormalized`` up to the unknown scanner scale: ``z_range * x`` is the z-score, so
    with the defaults the brain lies in [250, 1750] and re-z-scoring the written volume recovers ``z_range * x``.
    The foreground is the argmax of the one-hot condition in ``cond_key`` being > 0.
    """

    def __init__(self, keys: KeysCollection = "pred", cond_key: str = "image", z_range: float = 3.0,
                 offset: float = 1000.0, scale: float = 250.0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if offset - scale * z_range <= 0:
            raise ValueError("offset - scale * z_range must be > 0 so the brain never touches the 0 background")
        self.cond_key, self.z_range, self.offset, self.scale = cond_key, float(z_range), float(offset), float(scale)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        cond = torch.as_tensor(d[self.cond_key])
        fg = (cond.argmax(0, keepdim=True) > 0) if cond.shape[0] > 1 else (cond > 0)
        for key in self.key_iterator(d):
            x = d[key]
            xt = torch.as_tensor(x).float()
            out = torch.where(fg.to(xt.device), self.offset + self.scale * self.z_range * xt, torch.zeros_like(xt))
            if isinstance(x, MetaTensor):
                out = MetaTensor(out, meta=x.meta)
            d[key] = out
        return d
