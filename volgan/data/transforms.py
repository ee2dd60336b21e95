"""Dictionary transforms specific to the methods (MONAI style, composable with MONAI's own)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform, RandomizableTransform
from scipy import ndimage

from volgan.data.validate import source_path
from volgan.errors import VolganDataError

__all__ = ["BrainAsLabeld", "LoadOptionalImaged", "ForegroundNormalized", "ToPseudoIntensityd", "TumourPerturbd", "perturb_lesion"]

BRATS_LESION_LABELS = (1, 2, 4)


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


def _like(new: np.ndarray, ref: Any) -> Any:
    if isinstance(ref, MetaTensor):
        out = MetaTensor(torch.as_tensor(new, dtype=ref.dtype), meta=ref.meta)
        out.applied_operations = list(ref.applied_operations)
        return out
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(new, dtype=ref.dtype, device=ref.device)
    return new.astype(ref.dtype, copy=False)


class BrainAsLabeld(MapTransform):
    """Label every brain voxel without a tumour label as ``brain_label`` (MM-GAN Sec. V-A: label 3 = rest of brain).

    A voxel is brain when the image is non-zero (skull-stripped BraTS volumes are 0 outside the brain) in any
    channel of ``image_key`` and the label map is 0 there.
    """

    def __init__(self, keys: KeysCollection = "label", image_key: str = "image", brain_label: int = 3,
                 threshold: float = 0.0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.brain_label, self.threshold = image_key, int(brain_label), float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        brain = np.any(np.abs(np.asarray(d[self.image_key])) > self.threshold, axis=0, keepdims=True)
        for key in self.key_iterator(d):
            lab = np.asarray(d[key])
            if np.any(lab == self.brain_label):
                raise VolganDataError(source_path(d[key]), f"already contains label {self.brain_label}; "
                                      "it is reserved for 'rest of the brain'")
            d[key] = _like(np.where((lab == 0) & brain, self.brain_label, lab), d[key])
        return d


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
            d[key] = _like(out, d[key]) if isinstance(d[key], torch.Tensor) else out
            if isinstance(d[key], torch.Tensor):
                d[key] = d[key].float()
        return d


def perturb_lesion(
    label: np.ndarray,
    rng: np.random.RandomState,
    lesion_labels: Sequence[int] = BRATS_LESION_LABELS,
    fill_label: int = 3,
    rotate_range: float = np.pi / 6,
    scale_range: tuple[float, float] = (0.8, 1.2),
    flip_prob: float = 0.5,
    elastic_sigma: float = 2.0,
    elastic_magnitude: float = 2.0,
    margin: int = 4,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Deform only the lesion inside a label map (MM-GAN Sec. V-D augmentation): flip, rotation, scaling, elastic.

    The lesion (voxels with ``lesion_labels``) is cut out of its bounding box (+``margin``), replaced by
    ``fill_label``, transformed about its own centre with nearest-neighbour interpolation, and pasted back
    only where the organ is (label > 0), so it stays inside the organ. Returns the new label map and the
    parameters drawn (for provenance). ``label`` is a spatial array (no channel).
    """
    lesion = np.isin(label, list(lesion_labels))
    organ = label > 0
    if not lesion.any():
        return label.copy(), {"perturbed": False, "reason": "no lesion"}
    nd = label.ndim
    idx = np.argwhere(lesion)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, label.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = np.where(lesion[box], label[box], 0)
    shape = np.array(crop.shape, dtype=float)
    centre = (shape - 1) / 2.0

    scale = rng.uniform(*scale_range)
    flips = [bool(rng.rand() < flip_prob) for _ in range(nd)]
    angles = rng.uniform(-rotate_range, rotate_range, size=3 if nd == 3 else 1)
    if nd == 3:
        cx, cy, cz = np.cos(angles)
        sx, sy, sz = np.sin(angles)
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        rot = rz @ ry @ rx
    else:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        rot = np.array([[c, -s], [s, c]])
    flip = np.diag([-1.0 if f else 1.0 for f in flips])
    fwd = rot @ flip * scale  # output = fwd @ (input - centre) + centre
    inv = np.linalg.inv(fwd)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in crop.shape], indexing="ij"))
    coords = np.tensordot(inv, grid - centre.reshape((nd,) + (1,) * nd), axes=1) + centre.reshape((nd,) + (1,) * nd)
    if elastic_magnitude > 0:
        for axis in range(nd):
            field = ndimage.gaussian_filter(rng.uniform(-1, 1, crop.shape), elastic_sigma, mode="constant")
            field /= max(np.abs(field).max(), 1e-6)
            coords[axis] += field * elastic_magnitude
    moved = ndimage.map_coordinates(crop, coords, order=0, mode="constant", cval=0)
    out = label.copy()
    out[lesion] = fill_label
    region = out[box]
    paste = (moved > 0) & organ[box]
    region[paste] = moved[paste]
    out[box] = region
    params = {"perturbed": True, "scale": float(scale), "flips": flips, "angles_rad": [float(a) for a in angles],
              "elastic_sigma": elastic_sigma, "elastic_magnitude": elastic_magnitude,
              "lesion_voxels_before": int(lesion.sum()), "lesion_voxels_after": int(np.isin(out, list(lesion_labels)).sum())}
    return out, params


class TumourPerturbd(RandomizableTransform, MapTransform):
    """Randomly perturb the lesion inside a label map, keeping it inside the organ (MM-GAN Sec. V-D).

    See ``perturb_lesion``; the drawn parameters are stored in ``data[f"{key}_perturbation"]``.
    Seed with ``set_random_state(seed)`` (MONAI convention) for repeatable perturbations.
    """

    def __init__(self, keys: KeysCollection = "label", prob: float = 1.0,
                 lesion_labels: Sequence[int] = BRATS_LESION_LABELS, fill_label: int = 3,
                 rotate_range: float = np.pi / 6, scale_range: tuple[float, float] = (0.8, 1.2),
                 flip_prob: float = 0.5, elastic_sigma: float = 2.0, elastic_magnitude: float = 2.0,
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.kwargs = dict(lesion_labels=tuple(lesion_labels), fill_label=fill_label, rotate_range=rotate_range,
                           scale_range=tuple(scale_range), flip_prob=flip_prob, elastic_sigma=elastic_sigma,
                           elastic_magnitude=elastic_magnitude)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        self.randomize(None)
        for key in self.key_iterator(d):
            if not self._do_transform:
                d[f"{key}_perturbation"] = {"perturbed": False}
                continue
            lab = np.asarray(d[key])
            new, params = perturb_lesion(lab[0], self.R, **self.kwargs)
            d[key] = _like(new[None], d[key])
            d[f"{key}_perturbation"] = params
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
