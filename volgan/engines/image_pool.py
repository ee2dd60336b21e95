"""History pool of generated (image, label) tuples that D also sees (P1 Sec. IV-B; Shrivastava et al. 2017)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["ImagePool"]


class ImagePool:
    """Buffer of up to ``pool_size`` past (image, condition) tuples, one per batch element (MM-GAN Sec. IV-B).

    ``query`` returns, for each element of the batch: while the pool is not full, the current tuple (which is
    also stored); afterwards, with probability ``swap_prob`` a pooled tuple chosen uniformly among the slots
    (the current one takes its slot), else the current tuple. The image and its label map always travel
    together. Works with batch size 1. ``pool_size = 0`` disables the pool (query is the identity).

    Args:
        pool_size: number of stored tuples (4 in MM-GAN).
        swap_prob: probability of swapping once full (0.5; the paper says "randomly decide").
        seed: seed of the pool's own ``torch.Generator`` (repeatable on the CPU).
    """

    def __init__(self, pool_size: int = 4, swap_prob: float = 0.5, seed: int | None = 0):
        if pool_size < 0:
            raise ValueError(f"pool_size must be >= 0, got {pool_size}")
        if not 0.0 <= swap_prob <= 1.0:
            raise ValueError(f"swap_prob must be in [0, 1], got {swap_prob}")
        self.pool_size = int(pool_size)
        self.swap_prob = float(swap_prob)
        self.generator = torch.Generator()
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self.images: list[torch.Tensor] = []
        self.conds: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    @torch.no_grad()
    def query(self, images: torch.Tensor, conds: torch.Tensor | None = None):
        """Return a batch of (image, condition) of the same size, mixing current and pooled tuples.

        Without conditions (unconditional D, as CycleGAN's), pass ``conds=None``: the second element is ``None``.
        """
        if conds is None:
            return self.query(images, images.new_zeros((images.shape[0], 0) + tuple(images.shape[2:])))[0], None
        if images.shape[0] != conds.shape[0]:
            raise ValueError(f"batch sizes differ: images {images.shape[0]}, conditions {conds.shape[0]}")
        if self.pool_size == 0:
            return images, conds
        out_i, out_c = [], []
        for img, cond in zip(images.detach(), conds.detach()):
            img, cond = img.unsqueeze(0), cond.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(img.clone())
                self.conds.append(cond.clone())
                out_i.append(img)
                out_c.append(cond)
            elif torch.rand((), generator=self.generator).item() < self.swap_prob:
                slot = int(torch.randint(self.pool_size, (), generator=self.generator).item())
                out_i.append(self.images[slot].to(img.device))
                out_c.append(self.conds[slot].to(cond.device))
                self.images[slot], self.conds[slot] = img.clone(), cond.clone()
            else:
                out_i.append(img)
                out_c.append(cond)
        return torch.cat(out_i, 0), torch.cat(out_c, 0)

    def state_dict(self) -> dict[str, Any]:
        """Pool contents and RNG state, so a resumed run continues with the same history (tensors only)."""
        return {
            "pool_size": self.pool_size,
            "swap_prob": self.swap_prob,
            "images": [t.as_subclass(torch.Tensor).cpu() for t in self.images],
            "conds": [t.as_subclass(torch.Tensor).cpu() for t in self.conds],
            "rng_state": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["pool_size"]) != self.pool_size:
            raise ValueError(f"checkpoint pool has size {state['pool_size']}, this pool {self.pool_size}")
        self.images = [t.clone() for t in state["images"]]
        self.conds = [t.clone() for t in state["conds"]]
        self.generator.set_state(state["rng_state"])
