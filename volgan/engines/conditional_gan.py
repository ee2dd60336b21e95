"""Conditional GAN trainer: condition (label map) -> image, with image pool (P1 MM-GAN Sec. IV)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.nn.utils import parametrize

from volgan.data.transforms import plain_tensor
from volgan.engines.base import VolganTrainer, set_requires_grad
from volgan.engines.image_pool import ImagePool
from volgan.engines.keys import OutputKeys
from volgan.losses import L1SoftmaxLoss, LSGANLoss

__all__ = ["ConditionalGanTrainer"]


class ConditionalGanTrainer(VolganTrainer):
    """Trains G: condition -> image against a conditional PatchGAN D (MM-GAN, P1 Sec. IV).

    Each iteration (batch of condition ``c`` = one-hot label map and real image ``x``):

    1. ``x* = G(c)``.
    2. D step: ``(x*, c*) = pool.query(x*, c)`` (history of 4 tuples, MM-GAN Sec. IV-B), then
       ``L_D = adv(D(c, x), real) + adv(D(c*, x*), fake)``.
    3. G step with D frozen: ``L_G = adv(D(c, x*), real) + lambda_rec * |x* - x|_1``
       (``lambda_rec = 0`` in MM-GAN: pure LSGAN; > 0 gives a pix2pix-style reconstruction term).

    4. Optional segmentor step (P3 stage 1, Sec. 2.2): with ``s_network``, the segmentor learns from the current
       synthetic images (detached: coarse early, realistic later, an easy-to-hard curriculum) and their masks,
       ``L_S = s_loss(S(x*), y)``; P3's ``s_loss`` is the L1 between the one-hot mask and S's softmax.

    With ``d_cond_key`` D judges (that condition, image) instead of (``cond_key``, image): P3's D sees the
    plain mask while G gets the mask with Canny edges.

    ``engine.state.output`` holds ``OutputKeys`` entries: losses as floats (G_LOSS, G_ADV, G_REC, D_LOSS,
    D_REAL/D_FAKE = mean D scores, S_LOSS) and the detached tensors COND, REAL, FAKE for image logging.

    Args:
        device, max_epochs, train_data_loader: see ``VolganTrainer``; its other arguments
            (``epoch_length``, ``train_handlers``, ``options``, ``amp``, ``amp_dtype``...) pass as kwargs.
        g_network, d_network: generator and (conditional) discriminator.
        g_optimizer, d_optimizer: their optimisers (MM-GAN: Adam betas (0, 0.9), lr 4e-4 / 1e-4).
        adv_loss: adversarial loss called as ``adv(scores, target_is_real, for_discriminator)``
            (default ``LSGANLoss``).
        rec_loss: reconstruction loss ``rec(fake, real)`` weighted by ``lambda_rec`` (default L1).
        pool: ``ImagePool`` (``None`` or size 0 disables it).
        lambda_rec: weight of an optional L1 reconstruction term.
        cond_key, image_key: batch keys of the condition and the real image.
        d_cond_key: batch key of D's condition (default: ``cond_key``).
        s_network, s_optimizer, s_loss: optional segmentor trained on the synthetic images (P3 stage 1);
            ``s_loss(logits, mask)`` defaults to ``L1SoftmaxLoss``; ``mask_key`` names the mask in the batch.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        g_network: torch.nn.Module,
        d_network: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        adv_loss: torch.nn.Module | None = None,
        rec_loss: torch.nn.Module | None = None,
        pool: ImagePool | None = None,
        lambda_rec: float = 0.0,
        cond_key: str = "cond",
        image_key: str = "image",
        d_cond_key: str | None = None,
        s_network: torch.nn.Module | None = None,
        s_optimizer: torch.optim.Optimizer | None = None,
        s_loss: torch.nn.Module | None = None,
        mask_key: str = "label",
        **kwargs: Any,
    ):
        if (s_network is None) != (s_optimizer is None):
            raise ValueError("s_network and s_optimizer go together")
        optimizers = {"g": g_optimizer, "d": d_optimizer}
        if s_optimizer is not None:
            optimizers["s"] = s_optimizer
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            optimizers=optimizers,
            prepare_batch=self._prepare,
            **kwargs,
        )
        self.d_cond_key = d_cond_key or cond_key
        self.s_network, self.s_optimizer = s_network, s_optimizer
        self.s_loss = s_loss if s_loss is not None else L1SoftmaxLoss()
        self.mask_key = mask_key
        if lambda_rec < 0:
            raise ValueError(f"lambda_rec must be >= 0, got {lambda_rec}")
        self.g_network = g_network
        self.d_network = d_network
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        self.adv_loss = adv_loss if adv_loss is not None else LSGANLoss()
        self.rec_loss = rec_loss if rec_loss is not None else torch.nn.L1Loss()
        self.pool = pool if pool is not None else ImagePool(pool_size=0)
        self.lambda_rec = float(lambda_rec)
        self.cond_key = cond_key
        self.image_key = image_key

    def _prepare(self, batch: dict, device: torch.device, non_blocking: bool = False, **kwargs) -> tuple:
        keys = [self.cond_key, self.image_key, self.d_cond_key] + ([self.mask_key] if self.s_network else [])
        for key in keys:
            if key not in batch:
                raise KeyError(f"batch has no key {key!r} (keys: {sorted(batch)})")
        cond, real, d_cond = (plain_tensor(batch[k]).to(device=device, non_blocking=non_blocking, dtype=torch.float32)
                              for k in keys[:3])
        mask = plain_tensor(batch[self.mask_key]).to(device=device).long() if self.s_network else None
        return cond, real, d_cond, mask

    def _iteration(self, engine: ConditionalGanTrainer, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        cond, real, d_cond, mask = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        g, d = engine.g_network, engine.d_network
        g.train()
        d.train()

        with engine.autocast():
            fake = g(cond)

        # discriminator step on real pairs and (pooled) fake pairs
        set_requires_grad(d, True)
        fake_d, cond_d = engine.pool.query(fake.detach(), d_cond)
        # both D passes share one spectral-norm power iteration (the normalised weights are computed once per
        # optimiser step, as in Miyato et al. 2018), instead of one per forward pass
        with engine.autocast(), parametrize.cached():
            s_real = d(real, d_cond)
            s_fake = d(fake_d, cond_d)
            d_loss = engine.adv_loss(s_real, True, True) + engine.adv_loss(s_fake, False, True)
        engine.optimise("d", d_loss)

        # generator step with D frozen
        set_requires_grad(d, False)
        with engine.autocast():
            g_adv = engine.adv_loss(d(fake, d_cond), True, False)
            g_rec = engine.rec_loss(fake.float(), real) if engine.lambda_rec > 0 else torch.zeros((), device=fake.device)
            g_loss = g_adv + engine.lambda_rec * g_rec
        engine.optimise("g", g_loss)
        set_requires_grad(d, True)

        extra = {}
        if engine.s_network is not None:  # P3 stage 1: S learns from the current synthetic images
            engine.s_network.train()
            with engine.autocast():
                s_loss = engine.s_loss(engine.s_network(fake.detach()), mask)
            engine.optimise("s", s_loss)
            extra[OutputKeys.S_LOSS] = s_loss.detach()

        return {
            **extra,
            OutputKeys.COND: cond.detach(),
            OutputKeys.REAL: real.detach(),
            OutputKeys.FAKE: fake.detach(),
            OutputKeys.G_LOSS: g_loss.detach(),
            OutputKeys.G_ADV: g_adv.detach(),
            OutputKeys.G_REC: g_rec.detach(),
            OutputKeys.D_LOSS: d_loss.detach(),
            OutputKeys.D_REAL: s_real.detach().float().mean(),
            OutputKeys.D_FAKE: s_fake.detach().float().mean(),
        }
