"""Evaluation helpers: summary tables of Dice per setting, MM-GAN's synthesis-quality measure (P1 Sec. V-B)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["summarise", "format_table", "synthesis_quality"]


def summarise(rows: Sequence[Mapping[str, Any]], regions: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation per region over cases (NaN cases, i.e. region absent in both, are skipped)."""
    out = {}
    for r in regions:
        vals = np.array([row[r] for row in rows if not math.isnan(row[r])], dtype=float)
        out[r] = (float(vals.mean()), float(vals.std())) if len(vals) else (float("nan"), float("nan"))
    return out


def format_table(results: Mapping[str, Mapping[str, Any]], regions: Sequence[str]) -> str:
    """Markdown table: one row per setting with ``n_train`` and mean +- sd Dice per region."""
    head = "| setting | train cases | test cases | " + " | ".join(regions) + " |"
    sep = "|---|---:|---:|" + "---:|" * len(regions)
    lines = [head, sep]
    for name, res in results.items():
        cells = [f"{res['summary'][r][0]:.3f} ± {res['summary'][r][1]:.3f}" for r in regions]
        lines.append(f"| {name} | {res.get('n_train', '')} | {res.get('n_test', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def synthesis_quality(seg_net, synthetic_items: Sequence[Mapping[str, Any]], label_values=(0, 1, 2, 3, 4),
                      regions=None, roi_size=(64, 64, 64), device=None) -> list[dict[str, float]]:
    """MM-GAN's quality measure: Dice of a segmentor trained on real images, applied to images synthesised from
    real label maps, against those label maps (per region). Higher = the synthetic images carry the anatomy
    and lesions where the label map says."""
    from volgan.metrics import BRATS_REGIONS
    from volgan.segmentation import evaluate_segmentor

    return evaluate_segmentor(seg_net, synthetic_items, label_values, regions or BRATS_REGIONS, roi_size, device)
