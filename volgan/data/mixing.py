"""Real and synthetic data mixed for segmentation training, the one place every method mixes:

- datalists at a ratio of the real count (P1 Sec. V-C: 100/300/500 % F + R): ``mix_datalists``;
- datasets concatenated (P3's offline GAN augmentation, ``gan_mix``): ``RealSyntheticDataset``;
- minibatches at a fixed real-synthetic ratio from a frozen generator (P5's 16-0 / 8-8 / 0-16, P4's augmenter):
  ``MixedPairsPrepareBatch``, ``ConditionalMixedPairsPrepareBatch``;
- one batch of real and one of translated volumes, half and half (P2's segmentor steps): ``mix_batches``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import Dataset as MonaiDataset
from torch.utils.data import ConcatDataset, Dataset

from volgan.config import as_bool, parse_ratio
from volgan.data.pairs import to_pair
from volgan.data.transforms import plain_tensor
from volgan.errors import VolganConfigError

__all__ = ["minibatch_counts", "mix_datalists", "RealSyntheticDataset", "mix_batches", "MixedPairsPrepareBatch",
           "ConditionalMixedPairsPrepareBatch"]


def minibatch_counts(ratio: Any, use_synthetic: Any = True) -> tuple[int, int]:
    """(real, synthetic) items per minibatch for ``ratio`` ``"<real>-<synthetic>"`` (P5's 16-0 / 8-8 / 0-16); without
    ``use_synthetic`` (P4's baseline) every place of the minibatch holds a real item: (real + synthetic, 0)."""
    n_real, n_syn = parse_ratio(ratio)
    return (n_real, n_syn) if as_bool(use_synthetic) else (n_real + n_syn, 0)


def mix_datalists(real: Sequence[Mapping[str, Any]], synthetic: Sequence[Mapping[str, Any]], percent: float = 100.0,
                  seed: int = 0, tag: bool = True) -> list[dict[str, Any]]:
    """Real pairs plus ``percent`` % of their count in synthetic pairs (MM-GAN: 100, 300, 500).

    Synthetic entries are drawn without replacement (seeded); asking for more than exist is an error, so a
    table's "300 %" is never silently 150 %. With ``tag``, entries get ``"synthetic": 0/1``.
    """
    if percent < 0:
        raise VolganConfigError(f"percent must be >= 0, got {percent}")
    n = int(round(len(real) * percent / 100.0))
    if n > len(synthetic):
        raise VolganConfigError(f"{percent:g} % of {len(real)} real cases needs {n} synthetic pairs, only "
                                f"{len(synthetic)} given: synthesise more copies (perturbation seeds)")
    idx = np.random.RandomState(seed).permutation(len(synthetic))[:n]
    out = [dict(r, **({"synthetic": 0} if tag else {})) for r in real]
    out += [dict(synthetic[i], **({"synthetic": 1} if tag else {})) for i in sorted(idx)]
    return out


class RealSyntheticDataset(ConcatDataset):
    """The real items followed by the synthetic ones, each through ``transform`` (P3 ``gan_mix``: the offline GAN
    slices join the real slices); ``include_synthetic=False`` gives the real items alone."""

    def __init__(self, real: Sequence[Any], synthetic: Sequence[Any] | None = None, transform: Any = None,
                 include_synthetic: bool = True):
        parts: list[Dataset] = [MonaiDataset(real, transform)]
        if include_synthetic and synthetic is not None:
            parts.append(MonaiDataset(synthetic, transform))
        super().__init__(parts)


def mix_batches(real_x: torch.Tensor, real_y: torch.Tensor, synth_x: torch.Tensor, synth_y: torch.Tensor,
                synthetic_fraction: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``synthetic_fraction`` synthetic and the rest real samples, both from this iteration (P2: "half
    real / half synthetic"); a real batch of one gives one real and one synthetic sample."""
    if not 0.0 <= synthetic_fraction <= 1.0:
        raise VolganConfigError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction}")
    n = real_x.shape[0]
    if n == 1:
        return torch.cat([real_x, synth_x]), torch.cat([real_y, synth_y])
    k = int(round(n * synthetic_fraction))
    return torch.cat([real_x[: n - k], synth_x[:k]]), torch.cat([real_y[: n - k], synth_y[:k]])


class MixedPairsPrepareBatch:
    """``prepare_batch`` for a segmentor trainer that mixes real and generated pairs in every minibatch at a fixed
    ratio (P5: 16-0, 8-8, 0-16): the first ``n_real`` real items plus ``n_synthetic`` pairs from the frozen
    ``generator`` (image channel(s) as the image, the mask channel thresholded at ``threshold``).

    Args:
        generator: a trained pair generator (``latent_dim`` noise -> (B, C_img + 1, ...)); used without gradients.
        n_real, n_synthetic: items of each kind per batch (the loader's batch size must be >= ``n_real``).
        seed: seed of the noise, for repeatable mixing.
    """

    def __init__(self, generator: torch.nn.Module, n_real: int = 8, n_synthetic: int = 8, latent_dim: int = 100,
                 threshold: float = 0.0, seed: int = 0, image_key: str = "image", label_key: str = "label"):
        if n_real < 0 or n_synthetic < 0 or n_real + n_synthetic == 0:
            raise VolganConfigError(f"invalid ratio {n_real}-{n_synthetic}")
        self.generator, self.n_real, self.n_synthetic = generator, int(n_real), int(n_synthetic)
        self.latent_dim, self.threshold = int(latent_dim), float(threshold)
        self.noise = torch.Generator().manual_seed(int(seed))
        self.image_key, self.label_key = image_key, label_key

    def reseed(self, seed: int) -> None:
        """Restart the noise from ``seed`` (``volgan.handlers.EpochSeed`` calls this every epoch)."""
        self.noise.manual_seed(int(seed))

    @torch.no_grad()
    def __call__(self, batchdata: dict, device: torch.device | None = None, non_blocking: bool = False, **kwargs):
        img = plain_tensor(batchdata[self.image_key])[: self.n_real].to(device=device, non_blocking=non_blocking)
        lab = plain_tensor(batchdata[self.label_key])[: self.n_real].to(device=device, non_blocking=non_blocking)
        if self.n_real and img.shape[0] < self.n_real:
            raise ValueError(f"batch has {img.shape[0]} real items, the ratio needs {self.n_real}")
        if self.n_synthetic:
            was_training = self.generator.training
            self.generator.eval()
            try:
                pairs = self._synthesise(batchdata, next(self.generator.parameters()).device).float().to(device)
            finally:
                self.generator.train(was_training)
            img = torch.cat([img.float(), pairs[:, :-1]])
            lab = torch.cat([lab.long(), (pairs[:, -1:] > self.threshold).long()])
        return img, lab

    def _synthesise(self, batchdata: dict, device: torch.device) -> torch.Tensor:
        """``n_synthetic`` generated pairs (B, C_img + 1, ...): ``G(z)`` (P5)."""
        z = torch.randn(self.n_synthetic, self.latent_dim, generator=self.noise)
        return self.generator(z.to(device))


class ConditionalMixedPairsPrepareBatch(MixedPairsPrepareBatch):
    """``MixedPairsPrepareBatch`` for a conditional generator ``G(x_j, z)`` (P4's generative adversarial U-Net used
    as an on-the-fly augmenter of a segmentor): every minibatch is its first ``n_real`` real items plus
    ``n_synthetic`` items ``G(x_j, z)``, the sources ``x_j`` being the batch's own slices (as ``to_pair`` pairs:
    image, mask) taken in order and cycled when ``n_synthetic`` exceeds them; with ``foreground_sources`` only
    slices whose mask has foreground are sources (G trains on those), unless the batch has none. The generated
    mask channel is thresholded at ``threshold`` (0). The loader's batch size must be >= ``n_real`` (and >= 1).

    Args: as ``MixedPairsPrepareBatch``; ``foreground_sources``: condition only on slices with foreground.
    """

    def __init__(self, generator: torch.nn.Module, n_real: int = 8, n_synthetic: int = 8, latent_dim: int = 100,
                 threshold: float = 0.0, seed: int = 0, image_key: str = "image", label_key: str = "label",
                 foreground_sources: bool = True):
        super().__init__(generator, n_real, n_synthetic, latent_dim, threshold, seed, image_key, label_key)
        self.foreground_sources = bool(foreground_sources)

    def sources(self, batchdata: dict, device: torch.device | None = None) -> torch.Tensor:
        """The ``n_synthetic`` source pairs ``x_j`` of a batch."""
        img = plain_tensor(batchdata[self.image_key]).to(device)
        lab = plain_tensor(batchdata[self.label_key]).to(device)
        if img.shape[0] == 0:
            raise ValueError("empty batch: no slice to condition the generator on")
        idx = torch.arange(img.shape[0], device=img.device)
        if self.foreground_sources:
            has_fg = (lab > 0).flatten(1).any(1)
            if bool(has_fg.any()):
                idx = idx[has_fg]
        idx = idx[torch.arange(self.n_synthetic, device=img.device) % idx.numel()]
        return to_pair(img[idx], lab[idx])

    def _synthesise(self, batchdata: dict, device: torch.device) -> torch.Tensor:
        z = torch.randn(self.n_synthetic, self.latent_dim, generator=self.noise)
        return self.generator(self.sources(batchdata, device), z.to(device))
