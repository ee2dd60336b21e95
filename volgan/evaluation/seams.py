"""Seams of sliding-window synthesis (issue #19): where the windows of MONAI's ``SlidingWindowInferer`` meet, and
how much larger the intensity step across those borders is than between neighbouring voxels elsewhere."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data.utils import dense_patch_slices

__all__ = ["window_borders", "tile_borders", "seam_index"]


def _scan_interval(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> list[int]:
    """MONAI's rule (``sliding_window_inference``): a window as large as the image does not move; otherwise it moves
    by ``roi * (1 - overlap)`` voxels (at least 1)."""
    out = []
    for s, r in zip(image_size, roi_size):
        out.append(int(r) if int(r) == int(s) else max(int(int(r) * (1 - float(overlap))), 1))
    return out


def window_borders(image_size: Sequence[int], roi_size: Sequence[int], overlap: float) -> list[list[int]]:
    """Per axis, the voxel indices ``b`` where a window starts or ends inside the image (the step between voxels
    ``b - 1`` and ``b`` crosses a border), for MONAI's window grid on an image of ``image_size`` (after MONAI pads
    an image smaller than the window up to it)."""
    size = [max(int(s), int(r)) for s, r in zip(image_size, roi_size)]
    roi = [min(int(r), s) for r, s in zip(roi_size, size)]
    slices = dense_patch_slices(size, roi, _scan_interval(size, roi, overlap))
    borders = []
    for a in range(len(size)):
        edges = {int(sl[a].start) for sl in slices} | {int(sl[a].stop) for sl in slices}
        borders.append(sorted(b for b in edges if 0 < b < int(image_size[a])))
    return borders


def tile_borders(image_size: Sequence[int], tile: Sequence[int]) -> list[list[int]]:
    """Per axis, the tile borders of ``TiledSynthesisInferer`` (multiples of the tile size inside the image)."""
    return [list(range(int(t), int(n), int(t))) for n, t in zip(image_size, tile)]


def seam_index(volume: torch.Tensor | np.ndarray, borders: Sequence[Sequence[int]],
               mask: torch.Tensor | np.ndarray | None = None) -> float:
    """Mean absolute intensity step across window ``borders`` (per axis, as ``window_borders`` gives them) / mean
    absolute step between neighbouring voxels elsewhere, over the voxel pairs inside ``mask`` (both voxels;
    default: everywhere). 1 means the borders are invisible; a seam shows as > 1. ``volume``: (X, Y, Z) (or 2D),
    as the synthesis wrote it."""
    v = torch.as_tensor(np.asarray(volume), dtype=torch.float64)
    m = torch.ones_like(v, dtype=torch.bool) if mask is None else torch.as_tensor(np.asarray(mask)).bool()
    if m.shape != v.shape:
        raise ValueError(f"mask shape {tuple(m.shape)} differs from the volume's {tuple(v.shape)}")
    across, elsewhere = [], []
    for a, axis_borders in enumerate(borders):
        if v.shape[a] < 2:
            continue
        step = (v.narrow(a, 1, v.shape[a] - 1) - v.narrow(a, 0, v.shape[a] - 1)).abs()
        both = m.narrow(a, 1, v.shape[a] - 1) & m.narrow(a, 0, v.shape[a] - 1)
        at_border = torch.zeros(v.shape[a] - 1, dtype=torch.bool)
        at_border[[int(b) - 1 for b in axis_borders if 0 < int(b) < v.shape[a]]] = True  # the step between b - 1 and b is element b - 1
        shape = [1] * v.ndim
        shape[a] = v.shape[a] - 1
        at_border = at_border.view(shape).expand_as(step)
        across.append(step[both & at_border])
        elsewhere.append(step[both & ~at_border])
    a, e = torch.cat(across), torch.cat(elsewhere)
    if a.numel() == 0:
        return 1.0  # one window covers the volume: no border inside it
    if e.numel() == 0 or float(e.mean()) == 0.0:
        return float("inf") if float(a.mean()) > 0 else 1.0
    return float(a.mean() / e.mean())
