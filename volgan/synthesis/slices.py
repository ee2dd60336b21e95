"""Offline GAN augmentation of 2D slices (P3's "GAN augmentation" baselines): new (image, label) slices from a trained
mask + edges -> image generator."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.transforms import Rand2DElasticd, RandAffined
from monai.utils import convert_to_tensor

from volgan.errors import VolganConfigError

__all__ = ["synthesize_slices", "OfflineGanSlices"]

logger = logging.getLogger(__name__)


@torch.no_grad()
def synthesize_slices(generator: torch.nn.Module, slices: Sequence[Mapping[str, Any]], cond_transform: Any,
                      copies: int = 1, deform: bool = True, cond_key: str = "cond", seed: int = 0,
                      device: Any = "cpu", batch_size: int = 16) -> list[dict[str, Any]]:
    """Offline GAN augmentation of 2D slices (P3's "GAN augmentation" baselines): ``copies`` new (image, label)
    pairs per real slice. Each real pair is first deformed together (``deform``: MONAI ``RandAffined`` rotation
    / scaling / translation and ``Rand2DElasticd``, seeded) so the new label is a new shape; ``cond_transform``
    (the bundle's mask + Canny-edges pipeline) builds the generator input from the deformed pair, and the
    trained ``generator`` turns it into the synthetic image. Items: ``{"image": (1, H, W) in [-1, 1],
    "label": (1, H, W) the deformed label, "case": -1, "slice": source index}``."""
    if copies < 1:
        raise VolganConfigError(f"copies must be >= 1, got {copies}")
    keys = ["image", "label"]
    warps = [RandAffined(keys, prob=1.0, rotate_range=0.26, scale_range=0.1, translate_range=(8, 8),
                         mode=("bilinear", "nearest"), padding_mode="border"),
             Rand2DElasticd(keys, spacing=(20, 20), magnitude_range=(1, 2), prob=1.0, mode=("bilinear", "nearest"),
                            padding_mode="border")]
    for i, w in enumerate(warps):
        w.set_random_state(seed=int(seed) + i)
    conds, out = [], []
    for k in range(copies):
        for si, item in enumerate(slices):
            d = {"image": torch.as_tensor(item["image"]).float(), "label": torch.as_tensor(item["label"]).float()}
            if deform:
                for w in warps:
                    d = w(d)
            d = {k: convert_to_tensor(v, track_meta=False).float() for k, v in d.items()}
            d["label"] = d["label"].round().long()
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

    @property
    def items(self) -> list[dict[str, Any]]:
        if self._items is None:
            logger.info("generating %d synthetic slices from the trained generator", len(self))
            self._items = synthesize_slices(self.generator, self.slices, self.cond_transform, self.copies,
                                            **self.kwargs)
        return self._items

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.items[i])
