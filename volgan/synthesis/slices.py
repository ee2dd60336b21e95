"""Offline augmentation of 2D slices (P3's "GAN augmentation" baselines): new (image, label) slices from a trained
mask + edges -> image generator, or from a per-label Gaussian image model (the non-GAN baseline)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Rand2DElasticd, RandAffined
from monai.utils import convert_to_tensor

from volgan.errors import VolganConfigError
from volgan.synthesis.label_to_image import LabelGaussianModel

__all__ = ["deformed_slices", "synthesize_slices", "gaussian_slices", "OfflineGanSlices", "OfflineGaussianSlices"]

logger = logging.getLogger(__name__)


def deformed_slices(slices: Sequence[Mapping[str, Any]], copies: int = 1, deform: bool = True,
                    seed: int = 0) -> list[dict[str, Any]]:
    """``copies`` deformed versions of every real (image, label) slice, the pair deformed together (``deform``:
    MONAI ``RandAffined`` rotation / scaling / translation and ``Rand2DElasticd``, seeded) so each new label is a
    new shape: P3's offline augmentation draws its synthetic conditions this way. Items: ``{"image", "label"
    (long), "slice": source index}``, copy by copy."""
    if copies < 1:
        raise VolganConfigError(f"copies must be >= 1, got {copies}")
    keys = ["image", "label"]
    warps = [RandAffined(keys, prob=1.0, rotate_range=0.26, scale_range=0.1, translate_range=(8, 8),
                         mode=("bilinear", "nearest"), padding_mode="border"),
             Rand2DElasticd(keys, spacing=(20, 20), magnitude_range=(1, 2), prob=1.0, mode=("bilinear", "nearest"),
                            padding_mode="border")]
    for i, w in enumerate(warps):
        w.set_random_state(seed=int(seed) + i)
    out = []
    for _ in range(copies):
        for si, item in enumerate(slices):
            d = {"image": torch.as_tensor(item["image"]).float(), "label": torch.as_tensor(item["label"]).float()}
            if deform:
                for w in warps:
                    d = w(d)
            d = {k: convert_to_tensor(v, track_meta=False).float() for k, v in d.items()}
            d["label"] = d["label"].round().long()
            out.append({**d, "slice": si})
    return out


@torch.no_grad()
def synthesize_slices(generator: torch.nn.Module, slices: Sequence[Mapping[str, Any]], cond_transform: Any,
                      copies: int = 1, deform: bool = True, cond_key: str = "cond", seed: int = 0,
                      device: Any = "cpu", batch_size: int = 16) -> list[dict[str, Any]]:
    """Offline GAN augmentation of 2D slices (P3's "GAN augmentation" baselines): ``copies`` new (image, label)
    pairs per real slice. The real pairs are deformed first (``deformed_slices``); ``cond_transform`` (the
    bundle's mask + Canny-edges pipeline) builds the generator input from the deformed pair, and the trained
    ``generator`` turns it into the synthetic image. Items: ``{"image": (1, H, W) in [-1, 1], "label": (1, H, W)
    the deformed label, "case": -1, "slice": source index}``."""
    conds, out = [], []
    for d in deformed_slices(slices, copies, deform, seed):
        si = d.pop("slice")
        conds.append(convert_to_tensor(cond_transform(dict(d))[cond_key], track_meta=False).float())
        out.append({"label": d["label"], "case": -1, "slice": si})
    was_training = generator.training
    generator.eval()
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    for start in range(0, len(conds), batch_size):
        fake = generator(torch.stack(conds[start:start + batch_size]).to(dev)).float().clamp(-1, 1).cpu()
        for j, f in enumerate(fake):
            out[start + j]["image"] = f
    generator.train(was_training)
    return out


def gaussian_slices(slices: Sequence[Mapping[str, Any]], copies: int = 1, deform: bool = True, seed: int = 0,
                    sigma: float = 0.7) -> list[dict[str, Any]]:
    """The non-GAN baseline of P3's offline augmentation (issue #20): the same deformed label slices as
    ``synthesize_slices``, each image drawn from a per-label Gaussian (``LabelGaussianModel`` with the background
    modelled, fitted to the real slices, clipped to [-1, 1]) instead of the generator. Same items."""
    model = LabelGaussianModel(sigma=sigma, background=True, clip=(-1.0, 1.0)).fit_arrays(
        ((np.asarray(it["image"]), np.asarray(it["label"])) for it in slices), source="the real training slices")
    rng = np.random.RandomState(int(seed))
    out = []
    for d in deformed_slices(slices, copies, deform, seed):
        image = model.sample(d["label"].numpy(), rng)
        out.append({"image": torch.from_numpy(image), "label": d["label"], "case": -1, "slice": d["slice"]})
    return out


class OfflineGanSlices(torch.utils.data.Dataset):
    """The slices of ``synthesize_slices`` as a dataset that generates them on first access, so a bundle can wire
    it into a data loader before the GAN has trained (P3's offline baselines: ``gan_mix``, ``gan_pretrain``).
    ``len`` is known up front: ``copies`` x the number of real slices."""

    def __init__(self, generator: torch.nn.Module, slices: Sequence[Mapping[str, Any]], cond_transform: Any,
                 copies: int = 1, **kwargs: Any):
        self.generator, self.slices, self.cond_transform = generator, slices, cond_transform
        self.copies, self.kwargs = int(copies), kwargs
        self._items: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.slices) * self.copies

    def generate(self) -> list[dict[str, Any]]:
        logger.info("generating %d synthetic slices from the trained generator", len(self))
        return synthesize_slices(self.generator, self.slices, self.cond_transform, self.copies, **self.kwargs)

    @property
    def items(self) -> list[dict[str, Any]]:
        if self._items is None:
            self._items = self.generate()
        return self._items

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.items[i])


class OfflineGaussianSlices(OfflineGanSlices):
    """``gaussian_slices`` as a lazily generated dataset (P3's ``gaussian_mix`` baseline), interchangeable with
    ``OfflineGanSlices``; ``kwargs``: ``deform``, ``seed``, ``sigma``."""

    def __init__(self, slices: Sequence[Mapping[str, Any]], copies: int = 1, **kwargs: Any):
        kwargs.pop("device", None)  # nothing to run on a device
        super().__init__(None, slices, None, copies, **kwargs)

    def generate(self) -> list[dict[str, Any]]:
        logger.info("drawing %d per-label Gaussian slices", len(self))
        return gaussian_slices(self.slices, self.copies, **self.kwargs)
