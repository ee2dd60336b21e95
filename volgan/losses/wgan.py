"""Wasserstein losses with gradient penalty (Gulrajani et al. 2017), used by P4 and P5."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

__all__ = ["WassersteinLoss", "GradientPenalty"]


class WassersteinLoss(nn.Module):
    """Critic: ``E[D(fake)] - E[D(real)]``; generator: ``-E[D(fake)]``. Call ``(scores, target_is_real, for_critic)``."""

    def forward(self, scores: torch.Tensor, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:
        s = scores.float().mean()
        return -s if target_is_real else s


class GradientPenalty(nn.Module):
    """``lambda * E[(||grad_x_hat D(x_hat)||_2 - 1)^2]`` at random interpolates ``x_hat`` of real and fake samples
    (WGAN-GP, lambda = 10 in P4 and P5). Always computed in fp32, outside autocast.

    ``critic`` is called as ``critic(x_hat)``, or ``critic(x_hat, cond)`` when a fixed condition is given
    (P4: the pair's first image stays fixed, the second is interpolated).
    """

    def __init__(self, weight: float = 10.0):
        super().__init__()
        self.weight = float(weight)

    def forward(self, critic: Callable, real: torch.Tensor, fake: torch.Tensor, cond: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        real, fake = real.detach().float(), fake.detach().float()
        alpha = torch.rand((real.shape[0],) + (1,) * (real.ndim - 1), generator=generator).to(real.device)
        x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        with torch.autocast(device_type=real.device.type, enabled=False):
            scores = critic(x_hat) if cond is None else critic(x_hat, cond)
        grad = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)[0]
        return self.weight * ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()
