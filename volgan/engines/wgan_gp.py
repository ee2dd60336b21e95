"""WGAN-GP trainer (P5: image + mask pairs from noise; shared with P4) and on-the-fly mixing of generated pairs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from volgan.engines.base import AdversarialTrainerBase, plain_tensor, set_requires_grad
from volgan.engines.keys import GanKeys
from volgan.losses import GradientPenalty, WassersteinLoss

__all__ = ["WganGpTrainer", "MixedPairsPrepareBatch", "to_pair"]


def to_pair(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Real (image in [-1, 1], binary mask) -> the 2-channel pair the critic sees (mask as -1 / 1, P5)."""
    return torch.cat([image.float(), (mask > 0).float() * 2 - 1], 1)


class WganGpTrainer(AdversarialTrainerBase):
    """WGAN-GP on image-mask pairs generated from noise (P5 Sec. 2; Gulrajani et al. 2017).

    Every iteration is one critic step, ``L_D = E[D(G(z))] - E[D(x)] + GP`` (GP with lambda 10, in fp32);
    every ``n_critic``-th iteration also a generator step, ``L_G = -E[D(G(z))]``. Real pairs are the batch's
    ``image`` (in [-1, 1]) and ``label`` (mask, mapped to -1 / 1) as two channels.

    Args:
        g_network: e.g. ``PairGenerator`` (``latent_dim`` noise -> pairs); d_network: e.g. ``DCGANCritic``.
        n_critic: critic steps per generator step (1 as in P4's Alg. 1; WGAN-GP's default is 5).
        gp_weight: lambda of the gradient penalty (10).
        kwargs: ``epoch_length``, ``train_handlers``, ``amp``... of ``AdversarialTrainerBase``.
    """

    def __init__(self, device: str | torch.device, max_epochs: int, train_data_loader: Iterable,
                 g_network: torch.nn.Module, d_network: torch.nn.Module, g_optimizer: torch.optim.Optimizer,
                 d_optimizer: torch.optim.Optimizer, latent_dim: int = 100, n_critic: int = 1, gp_weight: float = 10.0,
                 image_key: str = "image", mask_key: str = "label", seed: int = 0, **kwargs: Any):
        super().__init__(device=device, max_epochs=max_epochs, train_data_loader=train_data_loader,
                         optimizers={"g": g_optimizer, "d": d_optimizer}, prepare_batch=self._prepare, **kwargs)
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        self.g_network, self.d_network = g_network, d_network
        self.latent_dim, self.n_critic = int(latent_dim), int(n_critic)
        self.wasserstein, self.gradient_penalty = WassersteinLoss(), GradientPenalty(gp_weight)
        self.image_key, self.mask_key = image_key, mask_key
        self.noise = torch.Generator().manual_seed(int(seed))

    def _prepare(self, batch: dict, device: torch.device, non_blocking: bool = False, **kwargs) -> torch.Tensor:
        img = plain_tensor(batch[self.image_key]).to(device=device, non_blocking=non_blocking)
        mask = plain_tensor(batch[self.mask_key]).to(device=device, non_blocking=non_blocking)
        return to_pair(img, mask)

    def _z(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=self.noise).to(device)

    def _iteration(self, engine: WganGpTrainer, batchdata: dict) -> dict:
        real = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        g, d = engine.g_network, engine.d_network
        g.train()
        d.train()
        n = real.shape[0]
        set_requires_grad(d, True)
        with torch.no_grad(), engine.autocast():
            fake = g(engine._z(n, real.device))
        with engine.autocast():
            w = engine.wasserstein(d(fake.float()), False) + engine.wasserstein(d(real), True)
        gp = engine.gradient_penalty(d, real, fake)  # fp32
        d_loss = w + gp
        engine.optimise("d", d_loss)
        out = {GanKeys.D_LOSS: d_loss.detach(), "wasserstein": (-w).detach(), "gp": gp.detach(),
               GanKeys.REAL: real.detach()}
        if engine.state.iteration % engine.n_critic == 0:
            set_requires_grad(d, False)
            with engine.autocast():
                fake = g(engine._z(n, real.device))
                g_loss = engine.wasserstein(d(fake), True)
            engine.optimise("g", g_loss)
            set_requires_grad(d, True)
            out.update({GanKeys.G_LOSS: g_loss.detach(), GanKeys.FAKE: fake.detach()})
        return out


class MixedPairsPrepareBatch:
    """``prepare_batch`` for MONAI's ``SupervisedTrainer`` that mixes real and generated pairs in every minibatch at
    a fixed ratio (P5: 16-0, 8-8, 0-16): the first ``n_real`` real items plus ``n_synthetic`` pairs from the
    frozen ``generator`` (image channel(s) as the image, the mask channel thresholded at ``threshold``).

    Args:
        generator: a trained pair generator (``latent_dim`` noise -> (B, C_img + 1, ...)); used without gradients.
        n_real, n_synthetic: items of each kind per batch (the loader's batch size must be >= ``n_real``).
        seed: seed of the noise, for repeatable mixing.
    """

    def __init__(self, generator: torch.nn.Module, n_real: int = 8, n_synthetic: int = 8, latent_dim: int = 100,
                 threshold: float = 0.0, seed: int = 0, image_key: str = "image", label_key: str = "label"):
        if n_real < 0 or n_synthetic < 0 or n_real + n_synthetic == 0:
            raise ValueError(f"invalid ratio {n_real}-{n_synthetic}")
        self.generator, self.n_real, self.n_synthetic = generator, int(n_real), int(n_synthetic)
        self.latent_dim, self.threshold = int(latent_dim), float(threshold)
        self.noise = torch.Generator().manual_seed(int(seed))
        self.image_key, self.label_key = image_key, label_key

    @torch.no_grad()
    def __call__(self, batchdata: dict, device: torch.device | None = None, non_blocking: bool = False, **kwargs):
        img = plain_tensor(batchdata[self.image_key])[: self.n_real].to(device=device, non_blocking=non_blocking)
        lab = plain_tensor(batchdata[self.label_key])[: self.n_real].to(device=device, non_blocking=non_blocking)
        if self.n_real and img.shape[0] < self.n_real:
            raise ValueError(f"batch has {img.shape[0]} real items, the ratio needs {self.n_real}")
        if self.n_synthetic:
            was_training = self.generator.training
            self.generator.eval()
            z = torch.randn(self.n_synthetic, self.latent_dim, generator=self.noise)
            pairs = self.generator(z.to(next(self.generator.parameters()).device)).float().to(device)
            self.generator.train(was_training)
            img = torch.cat([img.float(), pairs[:, :-1]])
            lab = torch.cat([lab.long(), (pairs[:, -1:] > self.threshold).long()])
        return img, lab


def ratio_presets() -> dict[str, tuple[int, int]]:
    """P5's (real, synthetic) per minibatch of 16."""
    return {"16-0": (16, 0), "8-8": (8, 8), "0-16": (0, 16)}


__all__ += ["ratio_presets"]
