"""WGAN-GP trainers (P5: image + mask pairs from noise; P4: a conditional U-Net generator and a critic of image
pairs); mixing their output into segmentation minibatches is ``volgan.data.mixing``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from volgan.data.pairs import to_pair
from volgan.data.transforms import plain_tensor
from volgan.engines.base import VolganTrainer, set_requires_grad
from volgan.engines.keys import OutputKeys
from volgan.errors import VolganDataError
from volgan.losses import GradientPenalty, WassersteinLoss

__all__ = ["WganGpTrainer", "PairCriticWganGpTrainer"]


class WganGpTrainer(VolganTrainer):
    """WGAN-GP on image-mask pairs generated from noise (P5 Sec. 2; Gulrajani et al. 2017).

    Every iteration is one critic step, ``L_D = E[D(G(z))] - E[D(x)] + GP`` (GP with lambda 10, in fp32);
    every ``n_critic``-th iteration also a generator step, ``L_G = -E[D(G(z))]``. Real pairs are the batch's
    ``image`` (in [-1, 1]) and ``label`` (mask, mapped to -1 / 1) as two channels.

    Args:
        g_network: e.g. ``PairGenerator`` (``latent_dim`` noise -> pairs); d_network: e.g. ``DCGANCritic``.
        n_critic: critic steps per generator step (1 as in P4's Alg. 1; WGAN-GP's default is 5).
        gp_weight: lambda of the gradient penalty (10); weights only the default ``gradient_penalty``.
        adv_loss: the Wasserstein critic/generator loss (default ``WassersteinLoss``).
        gradient_penalty: ``gp(critic, real, fake, cond=...)`` (default ``GradientPenalty(gp_weight)``, fp32).
        kwargs: ``epoch_length``, ``train_handlers``, ``options``, ``amp``... of ``VolganTrainer``.
    """

    def __init__(self, device: str | torch.device, max_epochs: int, train_data_loader: Iterable,
                 g_network: torch.nn.Module, d_network: torch.nn.Module, g_optimizer: torch.optim.Optimizer,
                 d_optimizer: torch.optim.Optimizer, latent_dim: int = 100, n_critic: int = 1, gp_weight: float = 10.0,
                 image_key: str = "image", mask_key: str = "label", seed: int = 0,
                 adv_loss: torch.nn.Module | None = None, gradient_penalty: torch.nn.Module | None = None,
                 **kwargs: Any):
        super().__init__(device=device, max_epochs=max_epochs, train_data_loader=train_data_loader,
                         optimizers={"g": g_optimizer, "d": d_optimizer}, prepare_batch=self._prepare, **kwargs)
        if n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {n_critic}")
        self.g_network, self.d_network = g_network, d_network
        self.latent_dim, self.n_critic = int(latent_dim), int(n_critic)
        self.wasserstein = adv_loss if adv_loss is not None else WassersteinLoss()
        self.gradient_penalty = gradient_penalty if gradient_penalty is not None else GradientPenalty(gp_weight)
        self.image_key, self.mask_key = image_key, mask_key
        self.noise = torch.Generator().manual_seed(int(seed))

    def reseed(self, seed: int) -> None:
        """Restart the noise from ``seed`` (``EpochSeed`` calls this every epoch, so a resumed run draws the noise an
        uninterrupted one would)."""
        self.noise.manual_seed(int(seed))

    def _prepare(self, batch: dict, device: torch.device, non_blocking: bool = False, **kwargs) -> torch.Tensor:
        img = plain_tensor(batch[self.image_key]).to(device=device, non_blocking=non_blocking)
        mask = plain_tensor(batch[self.mask_key]).to(device=device, non_blocking=non_blocking)
        return to_pair(img, mask)

    def _z(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=self.noise).to(device)

    def _unpack(self, prepared: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """``prepare_batch``'s output -> (real samples the critic scores, fixed condition or None, G's input)."""
        return prepared, None, None

    def _generate(self, source: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
        """``n`` fake samples: ``G(z)`` (P5); subclasses feed ``source`` too."""
        return self.g_network(self._z(n, device))

    def _score(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return self.d_network(x) if cond is None else self.d_network(x, cond)

    def _iteration(self, engine: WganGpTrainer, batchdata: dict) -> dict:
        real, cond, source = engine._unpack(engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking))
        g, d = engine.g_network, engine.d_network
        g.train()
        d.train()
        n = real.shape[0]
        set_requires_grad(d, True)
        with torch.no_grad(), engine.autocast():
            fake = engine._generate(source, n, real.device)
        with engine.autocast():
            w = engine.wasserstein(engine._score(fake.float(), cond), False) + engine.wasserstein(
                engine._score(real, cond), True)
        gp = engine.gradient_penalty(d, real, fake, cond=cond)  # fp32
        d_loss = w + gp
        engine.optimise("d", d_loss)
        out = {OutputKeys.D_LOSS: d_loss.detach(), OutputKeys.WASSERSTEIN: (-w).detach(), OutputKeys.GP: gp.detach(),
               OutputKeys.REAL: real.detach()}
        if cond is not None:
            out[OutputKeys.COND] = cond.detach()
        if engine.state.iteration % engine.n_critic == 0:
            set_requires_grad(d, False)
            with engine.autocast():
                fake = engine._generate(source, n, real.device)
                g_loss = engine.wasserstein(engine._score(fake, cond), True)
            engine.optimise("g", g_loss)
            set_requires_grad(d, True)
            out.update({OutputKeys.G_LOSS: g_loss.detach(), OutputKeys.FAKE: fake.detach()})
        return out


class PairCriticWganGpTrainer(WganGpTrainer):
    """Conditional WGAN-GP of the generative adversarial U-Net (P4 Sec. II-B, Eqs. 4-5, Alg. 1, Sec. II-D).

    Each batch holds two slices of one class (``SameClassPairs``): ``x_i`` (``image_i``/``label_i``) and ``x_j``
    (``image_j``/``label_j``), each made a 2-channel (image, mask as -1 / 1) pair by ``to_pair`` (the mask is
    volgan's extension; P4 makes images only). ``G(x_j, z) -> x_g``; the critic scores pairs,
    ``D(x_i, x_second)`` = ``d_network(x_second, x_i)`` on ``cat(x_i, x_second)``:

    - critic: ``L_D = E[D(x_i, x_g)] - E[D(x_i, x_j)] + lambda E[(||grad D(x_i, x_hat)|| - 1)^2]``, ``x_hat``
      between ``x_j`` and ``x_g`` with ``x_i`` fixed (``GradientPenalty(cond=x_i)``, fp32);
    - generator, every ``n_critic``-th iteration: ``L_G = -E[D(x_i, G(x_j, z))]``.

    Where P4's text (encode ``x_i``) and Fig. 1 (encode ``x_j``) disagree, G encodes ``x_j`` and the fake pair is
    ``(x_i, x_g)`` (SPEC.md). Outputs: ``OutputKeys`` ``REAL`` (x_j), ``COND`` (x_i), ``FAKE`` (x_g), losses.
    Same arguments as ``WganGpTrainer`` (P4: Adam 1e-4, betas (0, 0.9), ``n_critic`` 1, lambda 10); the batch
    keys are ``image_key``/``mask_key`` with the suffixes ``_i`` and ``_j``.
    """

    def _prepare(self, batch: dict, device: torch.device, non_blocking: bool = False, **kwargs):
        return tuple(super(PairCriticWganGpTrainer, self)._prepare(
            {self.image_key: batch[f"{self.image_key}_{s}"], self.mask_key: batch[f"{self.mask_key}_{s}"]}, device,
            non_blocking) for s in ("i", "j"))

    def _unpack(self, prepared: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x_i, x_j = prepared
        if x_i.shape != x_j.shape:
            raise VolganDataError(None, f"x_i {tuple(x_i.shape)} and x_j {tuple(x_j.shape)} of a pair differ in shape")
        return x_j, x_i, x_j

    def _generate(self, source: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor:
        return self.g_network(source, self._z(n, device))
