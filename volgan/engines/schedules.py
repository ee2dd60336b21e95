"""Learning-rate schedules of the papers (constant, then linear decay to zero)."""

from __future__ import annotations

import logging

import torch

__all__ = ["LinearDecay", "LinearDecayLR", "linear_decay_scheduler"]

logger = logging.getLogger(__name__)


class LinearDecay:
    """Multiplier 1 until ``decay_start`` epochs, then linear to 0 at ``total`` (MM-GAN: decay after 100 of 200).

    The paper says the lr is "decayed to 0 after epoch 100" without the form; linear is used (SPEC.md P1).
    A callable object (not a lambda) so ``LambdaLR.state_dict`` stores its settings and checkpoints load
    with ``weights_only=True``.
    """

    def __init__(self, total: int, decay_start: int | None = None):
        self.total = int(total)
        self.decay_start = int(self.total // 2 if decay_start is None else decay_start)
        if not 0 <= self.decay_start <= self.total:
            raise ValueError(f"decay_start must be in [0, {self.total}], got {self.decay_start}")

    def __call__(self, epoch: int) -> float:
        if epoch < self.decay_start:
            return 1.0
        span = max(self.total - self.decay_start, 1)
        return max(0.0, 1.0 - (epoch - self.decay_start) / span)


class LinearDecayLR(torch.optim.lr_scheduler.LambdaLR):
    """``LambdaLR`` with ``LinearDecay``, stepping once per epoch, whose schedule is this run's: a checkpoint restores
    the epoch count, not the old run's ``total``/``decay_start``, so resuming with a larger ``max_epochs`` extends
    the schedule (the lr is recomputed for the restored epoch) instead of keeping the lr at 0 (issue #18)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total: int, decay_start: int | None = None):
        super().__init__(optimizer, lr_lambda=LinearDecay(total, decay_start))

    def load_state_dict(self, state_dict: dict) -> None:
        state = dict(state_dict)
        old = (state.get("lr_lambdas") or [None])[0] or {}
        state["lr_lambdas"] = [None] * len(self.lr_lambdas)  # keep this run's schedule; restore the counters
        super().load_state_dict(state)
        decay = self.lr_lambdas[0]
        if old and (old.get("total"), old.get("decay_start")) != (decay.total, decay.decay_start):
            logger.warning("lr schedule of the resumed run: linear decay from epoch %d to %d (the checkpoint's was "
                           "%s to %s)", decay.decay_start, decay.total, old.get("decay_start"), old.get("total"))
        self._last_lr = [base * fn(self.last_epoch) for base, fn in zip(self.base_lrs, self.lr_lambdas)]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


def linear_decay_scheduler(optimizer: torch.optim.Optimizer, total: int, decay_start: int | None = None):
    """``LinearDecayLR``: constant, then linear decay to 0 at ``total`` epochs (MM-GAN, the cycle/shape GAN)."""
    return LinearDecayLR(optimizer, total, decay_start)
