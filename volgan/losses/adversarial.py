"""Adversarial losses (LSGAN for P1/P2), on top of MONAI's ``PatchAdversarialLoss``."""

from __future__ import annotations

import torch
from monai.losses import PatchAdversarialLoss

__all__ = ["LSGANLoss", "BCEGANLoss", "L1SoftmaxLoss"]


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


class BCEGANLoss(PatchAdversarialLoss):
    """Non-saturating GAN loss on logits (pix2pix; P3 Eq. 1 with the usual ``-log D(G(x))`` for G, since the
    printed form minimises ``log D(fake)``): D targets real 1 / fake 0 with BCE; G targets 1."""

    def __init__(self, reduction: str = "mean"):
        super().__init__(reduction=reduction, criterion="bce")
        self.activation = None
        self.loss_fct = torch.nn.BCEWithLogitsLoss(reduction=reduction)


class L1SoftmaxLoss(torch.nn.Module):
    """P3's segmentor loss: L1 between the one-hot mask and the softmax of S's logits (mean over voxels)."""

    def forward(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lab = mask[:, 0] if mask.ndim == logits.ndim else mask
        onehot = torch.nn.functional.one_hot(lab.long(), logits.shape[1]).movedim(-1, 1).to(logits.dtype)
        return torch.nn.functional.l1_loss(torch.softmax(logits.float(), 1), onehot.float())
