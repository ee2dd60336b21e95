"""Cycle- and shape-consistent GAN trainer with segmentors in the loop (P2, Sec. 3, Alg. in Sec. 3.4)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from ignite.engine import EventEnum

from volgan.data.mixing import mix_batches
from volgan.data.transforms import plain_tensor
from volgan.engines.base import VolganTrainer, set_requires_grad
from volgan.engines.image_pool import ImagePool
from volgan.engines.keys import OutputKeys
from volgan.losses import CycleConsistencyLoss, LSGANLoss, SegmentationCELoss, ShapeConsistencyLoss

__all__ = ["CycleShapeTrainer", "CycleShapeEvents", "MODES"]

MODES = ("ours", "ada", "cyclegan")


class CycleShapeEvents(EventEnum):
    """Fired after each optimiser step of an iteration (G first, then S, then D), e.g. for tests and logging."""

    G_STEP_COMPLETED = "g_step_completed"
    S_STEP_COMPLETED = "s_step_completed"
    D_STEP_COMPLETED = "d_step_completed"


class CycleShapeTrainer(VolganTrainer):
    """Trains G_A, G_B, D_A, D_B and the segmentors S_A, S_B of the cycle/shape GAN (P2).

    Domains A (CT) and B (MRI) are unpaired; labels share one space. Per iteration, by phase:

    - ``"s"`` (pre-training S): S_A on (x_A, y_A), S_B on (x_B, y_B).
    - ``"gd"`` (CycleGAN): G step with D frozen, ``L_G = adv(D_B(G_B(x_A))) + adv(D_A(G_A(x_B))) + L_cyc``;
      then the D step on real vs pooled fake volumes.
    - ``"joint"`` (mode ``ours``): G step with D and S frozen, ``L_G + gamma * L_shape`` (shape consistency,
      Eq. 4: cross-entropy of S_B(G_B(x_A)) vs y_A and S_A(G_A(x_B)) vs y_B); then with G frozen the S step on
      half real / half synthetic batches (S_A on x_A and G_A(x_B) labelled y_B; S_B alike) and the D step.
    - ``"ada"`` (mode ``ada``, after G/D training): G frozen; S fine-tuned on real + synthetic and reconstructed
      volumes (half real, half generated), the offline ADA baseline computed on the fly from the frozen G.

    Mode ``ours``: ``pretrain_s_epochs`` of "s", ``pretrain_gd_epochs`` of "gd", then "joint".
    Mode ``ada``: the same pre-training, then "ada". Mode ``cyclegan``: "gd" throughout (after "s" pre-training,
    so its S is the real-only baseline). Events ``CycleShapeEvents`` fire after each step.

    Args:
        g_a, g_b, d_a, d_b, s_a, s_b: networks (G_B: A -> B, G_A: B -> A; D_X and S_X judge / segment domain X).
        g_optimizer, d_optimizer, s_optimizer: one optimiser over both G's, both D's, both S's.
        mode: ``"ours"``, ``"ada"`` or ``"cyclegan"``.
        lambda_cycle, gamma_shape: loss weights (10 and 1 in P2).
        synthetic_fraction: share of synthetic samples in S batches (0.5: "half real / half synthetic").
        pool_size: image pool per domain (CycleGAN: 50; 0 disables).
        adv_loss: adversarial loss ``adv(scores, target_is_real, for_discriminator)`` (default LSGAN, P2).
        cycle_loss, shape_loss: default ``CycleConsistencyLoss(lambda_cycle)``, ``ShapeConsistencyLoss(gamma_shape)``
            (Eqs. 2 and 4; the weights apply only to the defaults).
        seg_loss: segmentors' supervised loss ``seg(logits, label)`` (default cross-entropy, P2).
        kwargs: ``epoch_length``, ``train_handlers``, ``options``, ``amp``... of ``VolganTrainer``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        g_a: torch.nn.Module,
        g_b: torch.nn.Module,
        d_a: torch.nn.Module,
        d_b: torch.nn.Module,
        s_a: torch.nn.Module,
        s_b: torch.nn.Module,
        g_optimizer: torch.optim.Optimizer,
        d_optimizer: torch.optim.Optimizer,
        s_optimizer: torch.optim.Optimizer,
        mode: str = "ours",
        lambda_cycle: float = 10.0,
        gamma_shape: float = 1.0,
        synthetic_fraction: float = 0.5,
        pretrain_s_epochs: int = 0,
        pretrain_gd_epochs: int = 0,
        pool_size: int = 50,
        seed: int = 0,
        adv_loss: torch.nn.Module | None = None,
        cycle_loss: torch.nn.Module | None = None,
        shape_loss: torch.nn.Module | None = None,
        seg_loss: torch.nn.Module | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            device=device, max_epochs=max_epochs, train_data_loader=train_data_loader,
            optimizers={"g": g_optimizer, "d": d_optimizer, "s": s_optimizer}, prepare_batch=self._prepare,
            event_names=[CycleShapeEvents], **kwargs,
        )
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not 0.0 <= synthetic_fraction <= 1.0:
            raise ValueError(f"synthetic_fraction must be in [0, 1], got {synthetic_fraction}")
        self.g_a, self.g_b, self.d_a, self.d_b, self.s_a, self.s_b = g_a, g_b, d_a, d_b, s_a, s_b
        self.g_optimizer, self.d_optimizer, self.s_optimizer = g_optimizer, d_optimizer, s_optimizer
        self.mode = mode
        self.adv_loss = adv_loss if adv_loss is not None else LSGANLoss()
        self.cycle_loss = cycle_loss if cycle_loss is not None else CycleConsistencyLoss(lambda_cycle)
        self.shape_loss = shape_loss if shape_loss is not None else ShapeConsistencyLoss(gamma_shape)
        self.seg_loss = seg_loss if seg_loss is not None else SegmentationCELoss()
        self.synthetic_fraction = float(synthetic_fraction)
        self.pretrain_s_epochs, self.pretrain_gd_epochs = int(pretrain_s_epochs), int(pretrain_gd_epochs)
        self.pool_a = ImagePool(pool_size, seed=seed)
        self.pool_b = ImagePool(pool_size, seed=seed + 1)

    def phase(self, epoch: int) -> str:
        """Phase of 1-based ``epoch``: "s", "gd", "joint" or "ada" (see the class docstring)."""
        if epoch <= self.pretrain_s_epochs:
            return "s"
        if self.mode == "cyclegan" or epoch <= self.pretrain_s_epochs + self.pretrain_gd_epochs:
            return "gd"
        return "joint" if self.mode == "ours" else "ada"

    def _prepare(self, batch: dict, device: torch.device, non_blocking: bool = False, **kwargs) -> tuple:
        keys = ("a_image", "a_label", "b_image", "b_label")
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"unpaired batch lacks {missing} (keys: {sorted(batch)})")
        x_a, y_a, x_b, y_b = (plain_tensor(batch[k]).to(device=device, non_blocking=non_blocking) for k in keys)
        return x_a.float(), y_a.long(), x_b.float(), y_b.long()

    def _seg_loss(self, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            logits = net(x)
        return self.seg_loss(logits.float(), y)

    def _mix(self, real_x, real_y, synth_x, synth_y):
        return mix_batches(real_x, real_y, synth_x, synth_y, self.synthetic_fraction)

    def _iteration(self, engine: CycleShapeTrainer, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        x_a, y_a, x_b, y_b = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        phase = engine.phase(engine.state.epoch)
        nets_g, nets_d, nets_s = (engine.g_a, engine.g_b), (engine.d_a, engine.d_b), (engine.s_a, engine.s_b)
        for n in (*nets_g, *nets_d, *nets_s):
            n.train()
        out: dict[str, Any] = {OutputKeys.PHASE: phase, OutputKeys.REAL_A: x_a.detach(), OutputKeys.REAL_B: x_b.detach()}
        zero = torch.zeros((), device=x_a.device)

        if phase == "s":
            set_requires_grad(nets_s, True)
            s_loss = engine._seg_loss(engine.s_a, x_a, y_a) + engine._seg_loss(engine.s_b, x_b, y_b)
            engine.optimise("s", s_loss)
            engine.fire_event(CycleShapeEvents.S_STEP_COMPLETED)
            out[OutputKeys.S_LOSS] = s_loss.detach()
            return out

        if phase == "ada":  # G frozen: S on real + generated (synthetic and reconstructed)
            with torch.no_grad(), engine.autocast():
                fake_b, fake_a = engine.g_b(x_a), engine.g_a(x_b)
                rec_a, rec_b = engine.g_a(fake_b), engine.g_b(fake_a)
            set_requires_grad(nets_s, True)
            xa, ya = engine._mix(x_a, y_a, torch.cat([fake_a, rec_a]).float(), torch.cat([y_b, y_a]))
            xb, yb = engine._mix(x_b, y_b, torch.cat([fake_b, rec_b]).float(), torch.cat([y_a, y_b]))
            s_loss = engine._seg_loss(engine.s_a, xa, ya) + engine._seg_loss(engine.s_b, xb, yb)
            engine.optimise("s", s_loss)
            engine.fire_event(CycleShapeEvents.S_STEP_COMPLETED)
            out.update({OutputKeys.S_LOSS: s_loss.detach(), OutputKeys.FAKE_A: fake_a.detach(),
                        OutputKeys.FAKE_B: fake_b.detach()})
            return out

        # --- G step: D and S frozen
        set_requires_grad((*nets_d, *nets_s), False)
        set_requires_grad(nets_g, True)
        with engine.autocast():
            fake_b, fake_a = engine.g_b(x_a), engine.g_a(x_b)
            rec_a, rec_b = engine.g_a(fake_b), engine.g_b(fake_a)
            g_adv = engine.adv_loss(engine.d_b(fake_b), True, False) + engine.adv_loss(engine.d_a(fake_a), True, False)
            cycle = engine.cycle_loss((rec_a, x_a), (rec_b, x_b))
            shape = (engine.shape_loss((engine.s_b(fake_b), y_a), (engine.s_a(fake_a), y_b))
                     if phase == "joint" else zero)
            g_loss = g_adv + cycle + shape
        engine.optimise("g", g_loss)
        engine.fire_event(CycleShapeEvents.G_STEP_COMPLETED)
        set_requires_grad(nets_g, False)

        # --- S step (joint only): G frozen, half real / half synthetic
        if phase == "joint":
            set_requires_grad(nets_s, True)
            xa, ya = engine._mix(x_a, y_a, fake_a.detach().float(), y_b)
            xb, yb = engine._mix(x_b, y_b, fake_b.detach().float(), y_a)
            s_loss = engine._seg_loss(engine.s_a, xa, ya) + engine._seg_loss(engine.s_b, xb, yb)
            engine.optimise("s", s_loss)
            engine.fire_event(CycleShapeEvents.S_STEP_COMPLETED)
            out[OutputKeys.S_LOSS] = s_loss.detach()

        # --- D step: G frozen, real vs pooled fakes
        set_requires_grad(nets_d, True)
        pa, _ = engine.pool_a.query(fake_a.detach())
        pb, _ = engine.pool_b.query(fake_b.detach())
        with engine.autocast():
            d_loss = (engine.adv_loss(engine.d_a(x_a), True, True) + engine.adv_loss(engine.d_a(pa), False, True)
                      + engine.adv_loss(engine.d_b(x_b), True, True) + engine.adv_loss(engine.d_b(pb), False, True))
        engine.optimise("d", d_loss)
        engine.fire_event(CycleShapeEvents.D_STEP_COMPLETED)
        set_requires_grad((*nets_g, *nets_s), True)

        out.update({
            OutputKeys.G_LOSS: g_loss.detach(), OutputKeys.G_ADV: g_adv.detach(), OutputKeys.CYCLE: cycle.detach(),
            OutputKeys.SHAPE: shape.detach(), OutputKeys.D_LOSS: d_loss.detach(), OutputKeys.FAKE_A: fake_a.detach(),
            OutputKeys.FAKE_B: fake_b.detach(), OutputKeys.REC_A: rec_a.detach(),
        })
        return out
