"""Metrics the papers report, as thin wrappers over ``monai.metrics`` where MONAI has them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["BRATS_REGIONS", "dice_paper", "region_dice"]

#: BraTS evaluation regions (MM-GAN Table I): whole tumour, tumour core, enhancing tumour, and single labels.
BRATS_REGIONS: dict[str, tuple[int, ...]] = {
    "NCR(1)": (1,),
    "ED(2)": (2,),
    "ET(4)": (4,),
    "WT": (1, 2, 4),
    "TC": (1, 4),
}


def dice_paper(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, empty: float = float("nan")) -> float:
    """MM-GAN's Dice (Eq. 3): ``2 |x . y| / (|x|^2 + |y|^2)``, for binary masks or soft maps in [0, 1].

    For binary masks it equals the usual Dice (``monai.metrics.compute_dice``). Both empty -> ``empty``.
    """
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double().flatten()
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).double().flatten()
    denom = float((xt * xt).sum() + (yt * yt).sum())
    if denom == 0:
        return empty
    return float(2.0 * (xt * yt).sum() / denom)


def region_dice(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                regions: Mapping[str, Sequence[int]] = BRATS_REGIONS) -> dict[str, float]:
    """Dice per region (a region = a set of label values) between two integer label maps of the same shape."""
    p = torch.as_tensor(np.asarray(pred)).long()
    t = torch.as_tensor(np.asarray(target)).long()
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} != target shape {tuple(t.shape)}")
    out = {}
    for name, labels in regions.items():
        lab = torch.tensor(list(labels))
        out[name] = dice_paper(torch.isin(p, lab), torch.isin(t, lab))
    return out
