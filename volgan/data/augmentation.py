"""Standard augmentation of 2D slices, the baseline every comparison includes (issue #20) with P5's settings
(Neff et al. Sec. 3: random intensity shift and scale, translation, elastic deformation): one definition for
the bundles that train on slices (P5's ``augment``, P4's ``augment``)."""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import Compose, Rand2DElasticd, RandScaleIntensityd, RandShiftIntensityd

from volgan.config import as_bool

__all__ = ["standard_augmentation"]


def standard_augmentation(enabled: bool = True, keys: Sequence[str] = ("image", "label"), shift: float = 0.1,
                          scale: float = 0.1, translate: float = 10.0, magnitude: Sequence[float] = (0.0, 10.0),
                          spacing: float = 32.0) -> Compose:
    """MONAI random transforms on (image, label) slices in [-1, 1]: intensity shift by up to ``shift`` and scale by
    up to ``scale`` (0.1 on [-1, 1] = P5's 0.05 on [0, 1]), and one ``Rand2DElasticd`` with control points every
    ``spacing`` pixels, displacement ``magnitude`` and translation up to ``translate`` pixels (bilinear for the
    image, nearest for the label). ``enabled`` false: an empty ``Compose`` (the identity)."""
    if not as_bool(enabled):
        return Compose([])
    image, *rest = list(keys)
    return Compose([
        RandShiftIntensityd(keys=image, offsets=shift, prob=1.0),
        RandScaleIntensityd(keys=image, factors=scale, prob=1.0),
        Rand2DElasticd(keys=[image, *rest], spacing=[spacing, spacing], magnitude_range=list(magnitude),
                       translate_range=[translate, translate], prob=1.0,
                       mode=["bilinear"] + ["nearest"] * len(rest), padding_mode="border"),
    ])
