"""Look before you train (issue #19): one PNG with three planes of every synthetic pair, the label map's contours
drawn on the synthetic image, so a user sees the whole set at a glance."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

from volgan.data.validate import load_volume

__all__ = ["contact_sheet", "PLANES"]

#: (name, axis the plane is orthogonal to) for RAS-oriented (X, Y, Z) volumes
PLANES = (("axial", 2), ("coronal", 1), ("sagittal", 0))


def _planes(image: np.ndarray, label: np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The three planes through the centre of the label map's foreground (2D images: the image itself)."""
    if image.ndim == 2:
        return [("slice", image, label)]
    fg = np.argwhere(label > 0)
    centre = fg.mean(0).round().astype(int) if len(fg) else np.array(image.shape) // 2
    out = []
    for name, axis in PLANES:
        idx = [slice(None)] * 3
        idx[axis] = int(centre[axis])
        out.append((name, image[tuple(idx)], label[tuple(idx)]))
    return out


def contact_sheet(pairs: Sequence[tuple[str | os.PathLike, str | os.PathLike, str]], path: str | os.PathLike,
                  max_cases: int = 32) -> Path:
    """Write ``path`` (PNG): one row per (image, label, title) in ``pairs`` (the first ``max_cases``), three planes
    through the label's foreground centre, image in grey (1st-99th percentile window inside the foreground), every
    label value's contour in its own colour. Returns ``path``."""
    rows = list(pairs)[: int(max_cases)]
    cols = 3
    fig = Figure(figsize=(3 * cols, 2.9 * max(len(rows), 1)))
    FigureCanvasAgg(fig)
    colours = ("#e41a1c", "#4daf4a", "#377eb8", "#ff7f00", "#984ea3", "#ffff33", "#a65628", "#f781bf")
    for r, (image, label, title) in enumerate(rows):
        img = np.asarray(load_volume(image), np.float32)
        lab = np.asarray(load_volume(label))
        img = img[..., 0] if img.ndim == lab.ndim + 1 else img
        fg = img[lab > 0] if (lab > 0).any() else img.ravel()
        lo, hi = np.percentile(fg, [1, 99]) if fg.size else (0.0, 1.0)
        values = [int(v) for v in np.unique(lab) if v != 0]
        for c, (plane, im, lb) in enumerate(_planes(img, lab)):
            ax = fig.add_subplot(len(rows), cols, r * cols + c + 1)
            ax.imshow(im.T, cmap="gray", origin="lower", vmin=lo, vmax=hi if hi > lo else lo + 1)
            for k, v in enumerate(values):
                if (lb == v).any() and (lb != v).any():
                    ax.contour((lb == v).T.astype(float), levels=[0.5], colors=colours[k % len(colours)],
                               linewidths=0.6, origin="lower")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}: {plane}" if c == 0 else plane, fontsize=7)
    fig.tight_layout()
    fig.savefig(str(path), dpi=90)
    return Path(path)
