"""Composite networks used for validation: translation followed by segmentation (P2, Sec. 4.2 S-score)."""

from __future__ import annotations

import torch

__all__ = ["TranslateThenSegment"]


class TranslateThenSegment(torch.nn.Module):
    """``segmentor(translator(x))``: the segmentation logits of a translated image.

    With a generator G_B (A -> B) and a segmentor of domain B this is the quantity behind P2's S-score (Dice of
    S_B(G_B(x_A)) against the label of x_A); one module, so that MONAI's evaluators and sliding-window inferers
    run it per window. The two networks are shared, not copied (validation sees the current weights)."""

    def __init__(self, translator: torch.nn.Module, segmentor: torch.nn.Module):
        super().__init__()
        self.translator, self.segmentor = translator, segmentor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.segmentor(self.translator(x))
