"""Learning-rate schedules of the papers (constant, then linear decay to zero)."""

from __future__ import annotations

import torch

__all__ = ["LinearDecay", "linear_decay_scheduler"]


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


def linear_decay_scheduler(optimizer: torch.optim.Optimizer, total: int, decay_start: int | None = None):
    """``LambdaLR`` stepping once per epoch with ``LinearDecay(total, decay_start)``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=LinearDecay(total, decay_start))
