"""Adversarial losses (LSGAN for P1/P2), on top of MONAI's ``PatchAdversarialLoss``."""

from __future__ import annotations

import torch
from monai.losses import PatchAdversarialLoss

__all__ = ["LSGANLoss"]


class LSGANLoss(PatchAdversarialLoss):
    """Least-squares GAN loss (Mao et al. 2017) on per-patch score maps (P1 Eq. 1-2, P2 Eq. 7).

    D: ``0.5 * E[(D(x, y) - 1)^2] + 0.5 * E[D(x, G(x))^2]`` (call once for real, once for fake; each term
    carries the 0.5); G: ``0.5 * E[(D(x, G(x)) - 1)^2]``.

    MM-GAN's text assigns fake -> 1, real -> 0 and asks G for 1, which cannot train (G would be pushed to
    the fake target); this is the standard correction (real 1, fake 0, G -> 1), as SPEC.md says. P2's Eq. 7
    as printed is garbled likewise; the same loss is used there. Scores are taken raw (no activation).

    Args:
        weight: factor on the loss (0.5 in the LSGAN objective).
        reduction: ``"mean"`` over all patches (the paper sums; a constant factor Adam does not see).
    """

    def __init__(self, weight: float = 0.5, reduction: str = "mean"):
        super().__init__(reduction=reduction, criterion="least_squares", no_activation_leastsq=True)
        self.weight = float(weight)

    def forward(self, input, target_is_real: bool, for_discriminator: bool = True) -> torch.Tensor:  # noqa: A002
        return self.weight * super().forward(input, target_is_real=target_is_real, for_discriminator=for_discriminator)
