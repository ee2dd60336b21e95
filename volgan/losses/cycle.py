"""Cycle- and shape-consistency losses of the cycle/shape GAN (P2 Eq. 2-4)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CycleConsistencyLoss", "ShapeConsistencyLoss", "SegmentationCELoss"]


class SegmentationCELoss(nn.Module):
    """Cross-entropy of segmentor logits (B, K, ...) against class-index labels with or without a channel dim
    (P2's segmentor loss, Sec. 3.3, and the term inside the shape-consistency loss)."""

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        lab = label[:, 0] if label.ndim == logits.ndim else label
        return F.cross_entropy(logits.float(), lab.long())


class CycleConsistencyLoss(nn.Module):
    """``lambda * (|G_A(G_B(x_A)) - x_A|_1 + |G_B(G_A(x_B)) - x_B|_1)`` (P2 Eq. 3, lambda = 10).

    Call with (reconstruction, original) pairs: ``loss((rec_a, x_a), (rec_b, x_b))``; each L1 is a mean over voxels.
    """

    def __init__(self, weight: float = 10.0):
        super().__init__()
        self.weight = float(weight)

    def forward(self, *pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.weight * sum(F.l1_loss(rec.float(), orig.float()) for rec, orig in pairs)


class ShapeConsistencyLoss(nn.Module):
    """``gamma * (CE(S_B(G_B(x_A)), y_A) + CE(S_A(G_A(x_B)), y_B))`` (P2 Eq. 4, gamma = 1): the translated
    volume must keep the source's anatomy as the target-domain segmentor sees it.

    Call with (segmentor logits on a synthetic volume, source label map) pairs; labels are class indices
    with or without a channel dim. Gradients reach G through the (frozen) segmentor.
    """

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = float(weight)
        self.ce = SegmentationCELoss()

    def forward(self, *pairs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for logits, label in pairs:
            total = total + self.ce(logits, label)
        return self.weight * total
