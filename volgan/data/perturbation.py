"""Lesion perturbation of MM-GAN's augmentation workflow (P1 Sec. V-D), split as TorchIO splits its transforms:
``RandLesionPerturbd`` draws the parameters (flip, rotation, scaling, an elastic-field seed), ``LesionPerturbd``
applies given parameters deterministically. The parameters go into the synthesis provenance, so a synthetic
pair's label map can be replayed bit for bit from its source label map (``LesionPerturbd(params=...)``).

Rotation, scaling and the elastic field act in millimetres: the parameters carry ``voxel_mm``, the linear part of
the label map's affine (taken from a MetaTensor), so on a 0.8 x 0.8 x 6.5 mm grid a round lesion stays round
(in voxel index space it would stretch sixfold along the slices when rotated). Parameters without ``voxel_mm``
(plain arrays, provenance of volgan < 0.3) act in voxel index space."""

from __future__ import annotations

import zlib
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform
from scipy import ndimage

from volgan.data.datalist import case_name
from volgan.data.transforms import same_type_as
from volgan.data.validate import source_path
from volgan.errors import VolganConfigError

__all__ = ["BRATS_LESION_LABELS", "voxel_mm_of", "draw_lesion_perturbation", "apply_lesion_perturbation", "perturb_lesion",
           "LesionPerturbd", "RandLesionPerturbd"]

BRATS_LESION_LABELS = (1, 2, 4)
#: parameter names that ``apply_lesion_perturbation`` needs (what provenance must hold to replay)
PARAMETER_KEYS = ("scale", "flips", "angles_rad", "elastic_sigma", "elastic_magnitude", "elastic_seed",
                  "lesion_labels", "fill_label", "margin")
#: optional parameter: voxel offsets -> millimetres (the affine's linear part); absent or None: voxel index space
VOXEL_MM_KEY = "voxel_mm"


def draw_lesion_perturbation(rng: np.random.RandomState, spatial_dims: int = 3, rotate_range: float = np.pi / 6,
                             scale_range: Sequence[float] = (0.8, 1.2), flip_prob: float = 0.5,
                             elastic_sigma: float = 2.0, elastic_magnitude: float = 2.0,
                             lesion_labels: Sequence[int] = BRATS_LESION_LABELS, fill_label: int = 3,
                             margin: int = 4, voxel_mm: Any = None) -> dict[str, Any]:
    """The random half: one scaling factor, a flip per axis, rotation angles (3 in 3D, 1 in 2D) and the seed of the
    elastic displacement field, drawn from ``rng``; the settings that do not vary are copied in (JSON-ready).
    ``voxel_mm``: the label map's voxel -> mm matrix (``voxel_mm_of``): rotation, scaling and the elastic field
    (``elastic_sigma`` and ``elastic_magnitude`` then in mm) act in millimetres; ``None``: in voxels."""
    if spatial_dims not in (2, 3):
        raise VolganConfigError(f"lesion perturbation works on 2D or 3D label maps, got spatial_dims={spatial_dims}")
    scale = float(rng.uniform(*scale_range))
    flips = [bool(rng.rand() < flip_prob) for _ in range(spatial_dims)]
    angles = [float(a) for a in rng.uniform(-rotate_range, rotate_range, size=3 if spatial_dims == 3 else 1)]
    return {"scale": scale, "flips": flips, "angles_rad": angles, "elastic_sigma": float(elastic_sigma),
            "elastic_magnitude": float(elastic_magnitude), "elastic_seed": int(rng.randint(2**31 - 1)),
            "lesion_labels": [int(v) for v in lesion_labels], "fill_label": int(fill_label), "margin": int(margin),
            VOXEL_MM_KEY: None if voxel_mm is None else np.asarray(voxel_mm, dtype=float).tolist()}


def voxel_mm_of(label: Any) -> list[list[float]] | None:
    """The voxel -> millimetre matrix of a channel-first MetaTensor label map (its affine's linear part), or
    ``None`` for data without an affine."""
    if not isinstance(label, MetaTensor):
        return None
    nd = np.asarray(label).ndim - 1
    return np.asarray(label.affine, dtype=float)[:nd, :nd].tolist()


def _lesion_box(lesion: np.ndarray, margin: int, voxel_mm: np.ndarray | None,
                reach: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, centre) of the box the lesion is moved in. Voxel space: the lesion's bounding box + ``margin``,
    centred on the box. In mm: centred on the lesion, wide enough on every axis for the lesion turned any way and
    scaled by ``reach`` (on thick slices a lesion turned out of plane spans more slices than it did)."""
    idx = np.argwhere(lesion)
    shape = np.array(lesion.shape)
    if voxel_mm is None:
        lo = np.maximum(idx.min(0) - margin, 0)
        hi = np.minimum(idx.max(0) + margin + 1, shape)
        return lo, hi, (hi - lo - 1) / 2.0
    centre = (idx.min(0) + idx.max(0)) / 2.0
    radius_mm = float(np.linalg.norm(voxel_mm @ ((idx.max(0) - idx.min(0)) / 2.0 + 0.5)))
    spacing = np.linalg.norm(voxel_mm, axis=0)
    half = np.ceil(radius_mm * reach / spacing) + margin
    lo = np.maximum(np.floor(centre - half).astype(int), 0)
    hi = np.minimum(np.ceil(centre + half).astype(int) + 1, shape)
    return lo, hi, centre - lo


def _rotation(angles: Sequence[float]) -> np.ndarray:
    if len(angles) == 1:
        c, s = np.cos(angles[0]), np.sin(angles[0])
        return np.array([[c, -s], [s, c]])
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def apply_lesion_perturbation(label: np.ndarray, params: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """The deterministic half: deform only the lesion of a spatial label map (no channel) with ``params``.

    The lesion (voxels with ``lesion_labels``) is cut out of its bounding box (+ ``margin``), replaced by
    ``fill_label``, flipped, rotated and scaled about its own centre, displaced by a smooth elastic field made
    from ``elastic_seed`` (nearest-neighbour interpolation throughout), and pasted back only where the organ is
    (label > 0), so it stays inside the organ. Returns the new label map and a report (the parameters,
    ``perturbed``, lesion voxel counts before and after)."""
    missing = [k for k in PARAMETER_KEYS if k not in params]
    if missing:
        raise VolganConfigError(f"lesion perturbation parameters lack {missing}")
    lesion_labels = [int(v) for v in params["lesion_labels"]]
    lesion = np.isin(label, lesion_labels)
    organ = label > 0
    report = {k: params[k] for k in PARAMETER_KEYS}
    if params.get(VOXEL_MM_KEY) is not None:
        report[VOXEL_MM_KEY] = params[VOXEL_MM_KEY]
    if not lesion.any():
        return label.copy(), {**report, "perturbed": False, "reason": "no lesion"}
    nd = label.ndim
    if len(params["flips"]) != nd or len(params["angles_rad"]) != (3 if nd == 3 else 1):
        raise VolganConfigError(f"perturbation parameters are for {len(params['flips'])}D, the label map is {nd}D")
    voxel_mm = params.get(VOXEL_MM_KEY)
    voxel_mm = None if voxel_mm is None else np.asarray(voxel_mm, dtype=float)
    if voxel_mm is not None and voxel_mm.shape != (nd, nd):
        raise VolganConfigError(f"perturbation parameter {VOXEL_MM_KEY} is {voxel_mm.shape}, the label map is {nd}D")
    flip = np.diag([-1.0 if f else 1.0 for f in params["flips"]])
    fwd = _rotation(params["angles_rad"]) @ flip * float(params["scale"])  # output = fwd @ (input - c) + c
    magnitude = float(params["elastic_magnitude"])
    lo, hi, centre = _lesion_box(lesion, int(params["margin"]), voxel_mm, max(float(params["scale"]), 1.0) + 0.1)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    crop = np.where(lesion[box], label[box], 0)
    spacing = np.ones(nd) if voxel_mm is None else np.linalg.norm(voxel_mm, axis=0)
    if voxel_mm is not None:  # the same motion in mm, written in voxel indices: M^-1 fwd M
        fwd = np.linalg.inv(voxel_mm) @ fwd @ voxel_mm
    inv = np.linalg.inv(fwd)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in crop.shape], indexing="ij"))
    shift = centre.reshape((nd,) + (1,) * nd)
    coords = np.tensordot(inv, grid - shift, axes=1) + shift
    if magnitude > 0:
        field_rng = np.random.RandomState(int(params["elastic_seed"]))
        sigma = float(params["elastic_sigma"]) if voxel_mm is None else tuple(float(params["elastic_sigma"]) / spacing)
        for axis in range(nd):
            field = ndimage.gaussian_filter(field_rng.uniform(-1, 1, crop.shape), sigma, mode="constant")
            field /= max(np.abs(field).max(), 1e-6)
            coords[axis] += field * magnitude / spacing[axis]
    moved = ndimage.map_coordinates(crop, coords, order=0, mode="constant", cval=0)
    out = label.copy()
    out[lesion] = int(params["fill_label"])
    region = out[box]
    paste = (moved > 0) & organ[box]
    region[paste] = moved[paste]
    out[box] = region
    return out, {**report, "perturbed": True, "lesion_voxels_before": int(lesion.sum()),
                 "lesion_voxels_after": int(np.isin(out, lesion_labels).sum())}


def perturb_lesion(label: np.ndarray, rng: np.random.RandomState, **settings: Any) -> tuple[np.ndarray, dict]:
    """Draw parameters from ``rng`` and apply them (``settings``: those of ``draw_lesion_perturbation``)."""
    return apply_lesion_perturbation(label, draw_lesion_perturbation(rng, label.ndim, **settings))


class LesionPerturbd(MapTransform):
    """Apply given lesion-perturbation parameters to channel-first label maps (deterministic; P1 Sec. V-D).

    ``params``: a ``draw_lesion_perturbation`` result, e.g. the ``perturbation`` entry of a synthesis provenance
    JSON; the report goes to ``data[f"{key}_perturbation"]``."""

    def __init__(self, keys: KeysCollection = "label", params: Mapping[str, Any] | None = None,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.params = dict(params or {})

    def __call__(self, data: Mapping[Hashable, Any], params: Mapping[str, Any] | None = None) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            lab = np.asarray(d[key])
            new, report = apply_lesion_perturbation(lab[0], params if params is not None else self.params)
            d[key] = same_type_as(new[None], d[key])
            d[f"{key}_perturbation"] = report
        return d


class RandLesionPerturbd(RandomizableTransform, MapTransform):
    """Randomly perturb the lesion inside channel-first label maps, keeping it inside the organ (P1 Sec. V-D).

    Draws the parameters (``draw_lesion_perturbation``, from this transform's seeded ``R``) and applies them with
    ``LesionPerturbd``; the parameters and the result are stored in ``data[f"{key}_perturbation"]``, so
    ``LesionPerturbd(params=...)`` replays it. Seed with ``set_random_state(seed)`` (MONAI convention), or give
    ``case_seed``: each label map then draws from its own stream, seeded by ``case_seed`` and its file name, so a case
    gets the same perturbation whatever else is synthesised with it and in which order (sharded synthesis).
    With ``physical`` (default), MetaTensor label maps are perturbed in millimetres (their affine; ``elastic_sigma``
    and ``elastic_magnitude`` in mm); ``physical=False``, or data without an affine, in voxel index space."""

    def __init__(self, keys: KeysCollection = "label", prob: float = 1.0,
                 lesion_labels: Sequence[int] = BRATS_LESION_LABELS, fill_label: int = 3,
                 rotate_range: float = np.pi / 6, scale_range: Sequence[float] = (0.8, 1.2),
                 flip_prob: float = 0.5, elastic_sigma: float = 2.0, elastic_magnitude: float = 2.0,
                 margin: int = 4, case_seed: int | None = None, physical: bool = True,
                 allow_missing_keys: bool = False):
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.case_seed, self.physical = None if case_seed is None else int(case_seed), bool(physical)
        RandomizableTransform.__init__(self, prob)
        self.settings = dict(lesion_labels=tuple(lesion_labels), fill_label=fill_label, rotate_range=rotate_range,
                             scale_range=tuple(scale_range), flip_prob=flip_prob, elastic_sigma=elastic_sigma,
                             elastic_magnitude=elastic_magnitude, margin=margin)
        self.apply = LesionPerturbd(keys, allow_missing_keys=allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.case_seed is not None:
            name = case_name(source_path(next(iter(d[k] for k in self.key_iterator(d)))))
            self.set_random_state(seed=zlib.crc32(f"{self.case_seed}:{name}".encode()) % (2**31 - 1))
        self.randomize(None)
        if not self._do_transform:
            for key in self.key_iterator(d):
                d[f"{key}_perturbation"] = {"perturbed": False}
            return d
        first = next(iter(d[k] for k in self.key_iterator(d)))
        voxel_mm = voxel_mm_of(first) if self.physical else None
        return self.apply(d, draw_lesion_perturbation(self.R, np.asarray(first).ndim - 1, voxel_mm=voxel_mm,
                                                      **self.settings))
