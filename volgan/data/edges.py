"""Generator input of P3: the mask overlaid with Canny edges of the real image (P3 Sec. 2.1)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import cv2
import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from volgan.errors import VolganConfigError

__all__ = ["CANNY_PRESETS", "EDGE_MODES", "canny_edges", "edge_channels", "MaskWithEdgesd"]

#: OpenCV Canny thresholds (low, high) the paper uses per dataset (ratio 1:3).
CANNY_PRESETS: dict[str, tuple[float, float]] = {"heart": (20, 60), "prostate": (200, 600), "liver": (120, 360)}


#: how the edges join the mask: "overlay" (one channel, edge pixels set to 1) or "channels" (mask, edges)
EDGE_MODES = {"overlay": 1, "channels": 2}


def edge_channels(mode: str = "overlay") -> int:
    """Channels of the generator input ``MaskWithEdgesd`` makes in ``mode``."""
    if mode not in EDGE_MODES:
        raise VolganConfigError(f"--edge_mode must be one of {'|'.join(EDGE_MODES)}, got {mode!r}")
    return EDGE_MODES[mode]


def canny_edges(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Binary Canny edges of a 2D image with OpenCV (as in P3): the image is min-max scaled to uint8 first."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = float(img.min()), float(img.max())
    u8 = np.zeros(img.shape, np.uint8) if hi <= lo else np.round((img - lo) / (hi - lo) * 255).astype(np.uint8)
    return cv2.Canny(u8, float(low), float(high)) > 0


class MaskWithEdgesd(MapTransform):
    """Build P3's generator input in ``output_key`` from a label map and its real image.

    ``mode="overlay"`` (one channel): the binary mask (label > 0) with Canny edge pixels set to 1 — the
    paper's "mask overlaid with Canny edges", which it does not define further; ``mode="channels"``: mask and
    edges as two channels. Thresholds: ``preset`` ("heart", "prostate", "liver") or ``low``/``high``.
    2D items are (C, H, W); 3D items (C, H, W, D) get edges slice by slice along the last axis.
    """

    def __init__(self, keys: KeysCollection = "label", image_key: str = "image", output_key: str = "cond",
                 preset: str | None = "heart", low: float | None = None, high: float | None = None,
                 mode: str = "overlay", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if preset is not None and preset not in CANNY_PRESETS:
            raise VolganConfigError(f"unknown Canny preset {preset!r}; choose from {sorted(CANNY_PRESETS)}")
        lo, hi = CANNY_PRESETS[preset] if preset is not None else (None, None)
        self.low, self.high = float(low if low is not None else lo), float(high if high is not None else hi)
        edge_channels(mode)
        self.image_key, self.output_key, self.mode = image_key, output_key, mode

    def edges(self, image: np.ndarray) -> np.ndarray:
        if image.ndim == 2:
            return canny_edges(image, self.low, self.high)
        return np.stack([canny_edges(image[..., k], self.low, self.high) for k in range(image.shape[-1])], -1)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        img = np.asarray(d[self.image_key], dtype=np.float32)[0]
        edges = self.edges(img)
        for key in self.key_iterator(d):
            mask = np.asarray(d[key])[0] > 0
            if self.mode == "overlay":
                cond = (mask | edges).astype(np.float32)[None]
            else:
                cond = np.stack([mask, edges]).astype(np.float32)
            d[self.output_key] = torch.as_tensor(cond)
        return d
