"""The non-GAN baseline of label-map-to-image synthesis (issue #20): a Gaussian per label, as SynthSeg and TorchIO's
``RandomLabelsToImage`` generate images from label maps, here with each label's mean and standard deviation fitted
to the real training images (so it is a fair, cheap competitor of MM-GAN from the same label maps), then a light
Gaussian blur (partial-volume smoothness). Background (label 0) stays 0, as in skull-stripped MRI."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from volgan.data.datalist import case_name, write_datalist
from volgan.data.validate import load_volume
from volgan.errors import VolganDataError
from volgan.io import prepare_output_dir
from volgan.synthesis.writer import write_nifti

__all__ = ["LabelGaussianModel", "gaussian_label_pairs"]


class LabelGaussianModel:
    """Per label value: mean and standard deviation of the real images' intensities inside it (``fit`` on files,
    ``fit_arrays`` on (image, label) arrays), and ``sample(label_map, rng)``: an image with N(mean_k, sd_k) voxels
    in label k, blurred by ``sigma`` voxels inside the modelled region.

    Args:
        sigma: Gaussian blur (voxels) after sampling (partial-volume smoothness).
        background: also model label 0 (2D slices of CT/MRI, where "background" is anatomy); otherwise it stays
            ``0`` (skull-stripped MRI, MM-GAN's convention).
        clip: (low, high) the sampled intensities are clipped to (default: non-negative, MRI).
    """

    def __init__(self, sigma: float = 0.7, background: bool = False, clip: Sequence[float | None] = (0.0, None)):
        self.sigma, self.background = float(sigma), bool(background)
        self.clip = tuple(clip)
        self.params: dict[int, tuple[float, float]] = {}

    def fit(self, items: Sequence[Mapping[str, Any]]) -> LabelGaussianModel:
        def arrays():
            for it in items:
                img, lab = np.asarray(load_volume(it["image"]), np.float64), np.asarray(load_volume(it["label"]))
                img = img[..., 0] if img.ndim == lab.ndim + 1 else img
                if img.shape != lab.shape:
                    raise VolganDataError(str(it["image"]), f"shape {img.shape} differs from its label map's {lab.shape}")
                yield img, lab

        return self.fit_arrays(arrays(), source=str(items[0]["label"]) if items else "<none>")

    def fit_arrays(self, pairs: Iterable[tuple[Any, Any]], source: str = "the training pairs") -> LabelGaussianModel:
        """Fit to (image, label) arrays of one shape each (``source`` names them in the error of an empty fit)."""
        sums: dict[int, list[np.ndarray]] = {}
        for img, lab in pairs:
            img, lab = np.asarray(img, np.float64), np.asarray(lab)
            for v in np.unique(lab):
                if v != 0 or self.background:
                    sums.setdefault(int(v), []).append(img[lab == v])
        if not any(int(v) != 0 for v in sums):
            raise VolganDataError(source, "no foreground labels to fit")
        self.params = {v: (float(np.concatenate(x).mean()), float(np.concatenate(x).std())) for v, x in sums.items()}
        return self

    def sample(self, label: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
        label = np.asarray(label)
        out = np.zeros(label.shape, np.float32)
        for v in np.unique(label):
            if v == 0 and not self.background:
                continue
            mean, sd = self.params.get(int(v), (0.0, 0.0))
            m = label == v
            out[m] = rng.normal(mean, sd, int(m.sum()))
        fg = np.ones(label.shape, bool) if self.background else label > 0
        if self.sigma > 0 and fg.any():  # blur inside the modelled region only: normalised convolution
            w = ndimage.gaussian_filter(fg.astype(np.float32), self.sigma)
            out = np.where(fg, ndimage.gaussian_filter(out, self.sigma) / np.maximum(w, 1e-6), 0.0)
        return np.clip(out, *self.clip).astype(np.float32)


def gaussian_label_pairs(real: Sequence[Mapping[str, Any]], label_maps: Sequence[str | os.PathLike],
                         output_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False) -> list[dict[str, str]]:
    """``<case>_gmm.nii.gz`` images for each label map (e.g. the GAN's perturbed ones, for a like-for-like
    baseline) from a ``LabelGaussianModel`` fitted to the ``real`` pairs, with a copy of the label map and a
    ``datalist.json``; returns its entries. Seeded per label map (its position in the list)."""
    out = prepare_output_dir(output_dir, overwrite)
    model = LabelGaussianModel().fit(real)
    items = []
    for k, path in enumerate(label_maps):
        lab_img = load_volume(path)
        lab = np.asarray(lab_img).astype(np.int64)
        stem = case_name(str(path))
        img_path, lab_path = out / f"{stem}_gmm.nii.gz", out / f"{stem}_label.nii.gz"
        write_nifti(model.sample(lab, np.random.RandomState(seed * 100003 + k))[None], lab_img, img_path, np.float32)
        write_nifti(lab[None].astype(np.uint8), lab_img, lab_path, np.uint8)
        items.append({"image": str(img_path), "label": str(lab_path)})
    write_datalist(out / "datalist.json", items, description="volgan per-label Gaussian baseline pairs")
    return [{k: str(Path(v)) for k, v in it.items()} for it in items]
