"""A quality score on every synthetic (image, label) pair (issue #19), against the user's real training pairs:

(a) the Dice, per label, of a segmentor trained on the real pairs, applied to the synthetic image, against the label
    map it was made from (the check MAISI runs on every generated CT; P1 Sec. V-B's synthesis-quality measure per
    pair);
(b) per label, the 1-Wasserstein distance between the synthetic image's intensities inside the label and the real
    training images' (both z-scored inside their foreground, so scanner scales do not matter);
(c) memorisation: the normalised cross-correlation (NCC) of the synthetic image with its nearest real training image,
    against the same for real images the generator never saw (held-out pairs, else each training image against the
    others): a synthetic image closer to a training image than any real image is to one is flagged a near-copy.

``PairQuality.score`` gives one row per pair; ``SynthesisWriter`` writes it into the provenance JSON and
``quality.csv`` and leaves pairs that fail the thresholds out of the datalist.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from volgan.config import resolve_device
from volgan.data.datalist import load_datalist
from volgan.data.validate import load_volume, validate_datalist
from volgan.errors import VolganConfigError, VolganDataError
from volgan.evaluation.segmentor import evaluate_segmentor
from volgan.networks.definition import load_network

__all__ = ["filter_pairs", "intensity_distance", "normalised_cross_correlation", "foreground_zscores", "PairQuality", "pair_quality",
           ]


def intensity_distance(a: np.ndarray, b: np.ndarray, quantiles: int = 1000) -> float:
    """1-Wasserstein distance of two 1D samples: the mean absolute difference of their quantile functions (on
    ``quantiles`` evenly spaced levels; exact in the limit). NaN when either sample is empty."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.size == 0 or b.size == 0:
        return float("nan")
    q = (np.arange(quantiles) + 0.5) / quantiles
    return float(np.abs(np.quantile(a, q) - np.quantile(b, q)).mean())


def normalised_cross_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """NCC of ``a`` (N, ...) with ``b`` (M, ...) (same trailing shape): the (N, M) Pearson correlations of the
    flattened volumes; 1 = identical up to an affine intensity change."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a = (a - a.mean(1, keepdim=True)) / a.std(1, keepdim=True, correction=0).clamp_min(1e-12)
    b = (b - b.mean(1, keepdim=True)) / b.std(1, keepdim=True, correction=0).clamp_min(1e-12)
    return a @ b.T / a.shape[1]


def foreground_zscores(image: Any, label: Any) -> tuple[np.ndarray, np.ndarray]:
    """(z, label): the image (first channel) z-scored inside ``label > 0`` (0 outside), and the label map, both
    (X, Y, Z); the files are named in the error when the shapes differ or the label map is empty."""
    img, lab = load_volume(image), load_volume(label)
    x, y = np.asarray(img, np.float64), np.asarray(lab)
    x = x[..., 0] if x.ndim == y.ndim + 1 else x
    if x.shape != y.shape:
        raise VolganDataError(str(image), f"image shape {x.shape} differs from its label map's {y.shape} ({label})")
    fg = y > 0
    if not fg.any():
        raise VolganDataError(str(label), "empty label map: no foreground to score the image in")
    v = x[fg]
    if not np.isfinite(v).all():
        raise VolganDataError(str(image), "NaN or Inf inside the label map's foreground")
    z = np.zeros_like(x)
    z[fg] = (v - v.mean()) / max(float(v.std()), 1e-12)
    return z, y


def _thumbnail(z: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    t = torch.as_tensor(z, dtype=torch.float32)[None, None]
    return torch.nn.functional.interpolate(t, size=tuple(size), mode="trilinear" if t.ndim == 5 else "bilinear",
                                           align_corners=False)[0, 0]


class PairQuality:
    """Scores synthetic pairs against ``reference``, the real (image, label) pairs the generator was trained on.

    Args:
        reference: real training pairs (datalist JSON, folder, or list of {"image", "label"}), checked on load.
        label_values: the label values of the label maps (0 = background, not scored).
        segmentor: a segmentor trained on the real pairs (a network, or a ``model.pt`` with its ``model.json``),
            with the harness's preprocessing (``volgan.evaluation.segmentor``); ``None``: no Dice.
        held_out: real pairs the generator did not see: the memorisation baseline; ``None``: each reference image
            against the other reference images (leave one out).
        min_dice: pairs whose mean foreground Dice is below are not kept (``None``: no threshold).
        max_intensity_distance: pairs whose mean per-label W1 (in standard deviations) is above are not kept.
        reject_copies: near-copies of a training image are not kept.
        thumbnail: grid the NCC is computed on (images of any size compare).
        copy_margin: a near-copy's NCC exceeds the held-out baseline by more than this.
        samples_per_label: real intensities kept per label (a seeded subsample).
    """

    def __init__(self, reference: Any, label_values: Sequence[int] = (0, 1, 2, 3, 4), segmentor: Any = None,
                 held_out: Any = None, min_dice: float | None = None, max_intensity_distance: float | None = None,
                 reject_copies: bool = True, roi_size: Sequence[int] = (64, 64, 64), device: Any = None,
                 thumbnail: Sequence[int] = (48, 48, 48), samples_per_label: int = 200_000, seed: int = 0,
                 copy_margin: float = 0.01):
        self.label_values = [int(v) for v in label_values]
        self.foreground = [v for v in self.label_values if v != 0]
        self.min_dice = None if min_dice is None else float(min_dice)
        self.max_w1 = None if max_intensity_distance is None else float(max_intensity_distance)
        self.reject_copies, self.roi_size, self.thumbnail = bool(reject_copies), list(roi_size), tuple(thumbnail)
        self.copy_margin = float(copy_margin)
        self.device = resolve_device(device)
        self.reference = self._pairs(reference, "reference")
        rng = np.random.RandomState(seed)
        per_label: dict[int, list[np.ndarray]] = {v: [] for v in self.foreground}
        thumbs = []
        for it in self.reference:
            z, y = foreground_zscores(it["image"], it["label"])
            for v in self.foreground:
                per_label[v].append(z[y == v])
            thumbs.append(self._thumb(z))
        self.real_values = {}
        for v, parts in per_label.items():
            vals = np.concatenate(parts) if parts else np.zeros(0)
            self.real_values[v] = rng.choice(vals, samples_per_label, replace=False) if vals.size > samples_per_label else vals
        self.real_thumbs = torch.stack(thumbs)
        self.baseline = self._baseline(held_out)
        if segmentor is not None and not isinstance(segmentor, torch.nn.Module):
            segmentor = load_network(segmentor, self.device)
        self.segmentor = segmentor.to(self.device).eval() if segmentor is not None else None

    def _thumb(self, z: np.ndarray) -> torch.Tensor:
        return _thumbnail(z, self.thumbnail[: z.ndim])

    def _pairs(self, source: Any, what: str) -> list[dict]:
        items = load_datalist(source) if isinstance(source, (str, os.PathLike)) else [dict(i) for i in source]
        if not items:
            raise VolganDataError(str(source), f"no (image, label) pairs in the {what} set")
        return validate_datalist(items, label_values=self.label_values)

    def _baseline(self, held_out: Any) -> float:
        """The largest NCC of a real image the generator did not see with its nearest training image."""
        if held_out is not None:
            thumbs = torch.stack([self._thumb(foreground_zscores(it["image"], it["label"])[0])
                                  for it in self._pairs(held_out, "held-out")])
            return float(normalised_cross_correlation(thumbs, self.real_thumbs).max())
        if len(self.real_thumbs) < 2:
            return float("nan")  # one real image: no baseline, no copy check
        ncc = normalised_cross_correlation(self.real_thumbs, self.real_thumbs)
        ncc.fill_diagonal_(-float("inf"))
        return float(ncc.max())

    def score(self, image: Any, label: Any) -> dict[str, Any]:
        """One row: ``dice_<v>`` / ``intensity_w1_<v>`` per foreground label and their means, ``nearest_real_ncc``
        (and which image), ``held_out_ncc_max``, ``near_copy``, ``kept`` and the ``reasons`` it was not."""
        z, y = foreground_zscores(image, label)
        row: dict[str, Any] = {"image": os.path.basename(str(image)), "label": os.path.basename(str(label))}
        if self.segmentor is not None:
            regions = {f"dice_{v}": (v,) for v in self.foreground}
            dice = evaluate_segmentor(self.segmentor, [{"image": str(image), "label": str(label)}], self.label_values,
                                      regions, self.roi_size, self.device)[0]
            row.update({k: dice[k] for k in regions})
            present = [dice[k] for k in regions if not np.isnan(dice[k])]
            row["dice_mean"] = float(np.mean(present)) if present else float("nan")
        w1 = {f"intensity_w1_{v}": intensity_distance(z[y == v], self.real_values[v]) for v in self.foreground}
        row.update(w1)
        finite = [d for d in w1.values() if not np.isnan(d)]
        row["intensity_w1_mean"] = float(np.mean(finite)) if finite else float("nan")
        ncc = normalised_cross_correlation(self._thumb(z)[None], self.real_thumbs)[0]
        k = int(ncc.argmax())
        row["nearest_real_ncc"], row["nearest_real"] = float(ncc[k]), str(self.reference[k]["image"])
        row["held_out_ncc_max"] = self.baseline
        row["near_copy"] = bool(not np.isnan(self.baseline) and row["nearest_real_ncc"] > self.baseline + self.copy_margin)
        reasons = []
        if self.min_dice is not None and not row.get("dice_mean", float("nan")) >= self.min_dice:
            reasons.append(f"dice_mean < {self.min_dice:g}")
        if self.max_w1 is not None and not row["intensity_w1_mean"] <= self.max_w1:
            reasons.append(f"intensity_w1_mean > {self.max_w1:g}")
        if self.reject_copies and row["near_copy"]:
            reasons.append("near-copy of a training image")
        row["kept"], row["reasons"] = not reasons, "; ".join(reasons)
        return row

    def columns(self) -> list[str]:
        """quality.csv's columns, in order."""
        dice = ["dice_mean"] + [f"dice_{v}" for v in self.foreground] if self.segmentor is not None else []
        w1 = ["intensity_w1_mean"] + [f"intensity_w1_{v}" for v in self.foreground]
        return ["image", "label", "kept", "reasons", *dice, *w1, "nearest_real_ncc", "held_out_ncc_max", "near_copy",
                "nearest_real"]


def pair_quality(reference: Any = None, label_values: Sequence[int] = (0, 1, 2, 3, 4), segmentor: Any = None,
                 held_out: Any = None, min_dice: float | None = None, max_intensity_distance: float | None = None,
                 reject_copies: bool = True, roi_size: Sequence[int] = (64, 64, 64), device: Any = None
                 ) -> PairQuality | None:
    """The bundles' ``quality`` component: a ``PairQuality`` when real ``reference`` pairs are given, else ``None``
    (no scoring); thresholds without a reference are a configuration error."""
    if reference in (None, "", "null"):
        if segmentor or min_dice is not None or max_intensity_distance is not None or held_out:
            raise VolganConfigError("quality thresholds, a quality segmentor or held-out pairs need "
                                    "quality_reference: the real training pairs to score against")
        return None
    if isinstance(reference, Mapping):
        raise VolganConfigError("quality_reference must be a datalist, a folder or a list of pairs")
    return PairQuality(reference, label_values, segmentor, held_out, min_dice, max_intensity_distance, reject_copies,
                       roi_size, device)


def filter_pairs(items: Sequence[Mapping[str, Any]], quality_csv: str | os.PathLike, keep_fraction: float = 0.5,
                 by: str = "intensity_w1_mean") -> list[dict[str, Any]]:
    """The synthetic pairs of ``items`` that ``quality.csv`` (written by synthesis) ranks best: near-copies out, then
    the ``keep_fraction`` with the lowest ``by`` (``dice_mean``: the highest); the comparison harness's "real +
    filtered synthetic" setting draws from these."""
    with open(quality_csv, newline="", encoding="utf-8") as f:
        rows = {r["image"]: r for r in csv.DictReader(f)}
    scored = []
    for it in items:
        r = rows.get(os.path.basename(str(it["image"])))
        if r is None:
            raise VolganDataError(str(quality_csv), f"no quality row for {it['image']}")
        if str(r.get("near_copy", "False")) == "True" or by not in r:
            continue
        value = float(r[by])
        scored.append((-value if by.startswith("dice") else value, len(scored), dict(it)))
    scored.sort(key=lambda t: (np.nan_to_num(t[0], nan=np.inf), t[1]))
    keep = max(1, int(round(len(scored) * float(keep_fraction)))) if scored else 0
    return [it for _, _, it in scored[:keep]]
