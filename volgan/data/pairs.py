"""Image-mask pairs: the 2-channel form the WGAN-GP critics see (P5, P4), and pairs of slices of one class for the
critic of the generative adversarial U-Net (P4 Sec. II-B, Fig. 1)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from volgan.errors import VolganConfigError, VolganDataError

__all__ = ["to_pair", "SameClassPairs"]

logger = logging.getLogger(__name__)


def to_pair(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Real (image in [-1, 1], binary mask) -> the 2-channel pair a critic sees (mask as -1 / 1, P5)."""
    return torch.cat([image.float(), (mask > 0).float() * 2 - 1], 1)


class SameClassPairs(Dataset):
    """Two slices of one class per item: ``{"image_i", "label_i", "image_j", "label_j", "case_i", "case_j"}``.

    P4 draws two images ``x_i``, ``x_j`` of a class ``c_t`` every time (Fig. 1). Segmentation slices have no
    class label; in volgan a "class" is, with ``pair_by="case"`` (default), the foreground-containing slices of
    one case (volume), so the pair shows the same anatomy at two positions; with ``pair_by="all"``, every
    foreground-containing slice. Only slices whose label has foreground (``foreground`` values, or any label
    > 0) take part; each is ``x_i`` once per epoch and its partner ``x_j`` (never itself) is drawn at random
    (seeded). A slice that is the only foreground slice of its case (e.g. 2D images: one slice per case) takes
    its partner from all foreground slices; this fallback is logged. Fewer than two foreground slices in all is a
    ``VolganDataError``, as is a slice whose image and label differ in shape.

    Args:
        slices: items with "image" and "label" ((C, H, W) each) and, for ``pair_by="case"``, "case": e.g.
            ``volgan.data.SliceDataset(...)`` (its transform applies) or its ``.slices``.
        pair_by: ``"case"`` or ``"all"``.
        seed: seed of the partner draws.
        foreground: label values that count as foreground (``None``: every value > 0).
        transform: optional callable applied to each of the two items before they are returned (e.g.
            ``volgan.data.ForegroundMaskd`` to make the labels binary masks).
    """

    def __init__(self, slices: Sequence[Mapping[str, Any]], pair_by: str = "case", seed: int = 0,
                 foreground: Sequence[int] | None = None, transform: Callable | None = None):
        if pair_by not in ("case", "all"):
            raise VolganConfigError(f"pair_by must be 'case' or 'all', got {pair_by!r}")
        self.slices, self.pair_by, self.transform = slices, pair_by, transform
        fg_values = None if foreground is None else torch.as_tensor(list(foreground))
        self.eligible: list[int] = []
        cases: list[Any] = []
        for k in range(len(slices)):
            item = slices[k]
            img, lab = torch.as_tensor(item["image"]), torch.as_tensor(item["label"])
            if img.shape[1:] != lab.shape[1:]:
                raise VolganDataError(None, f"slice {k} (case {item.get('case')}): image shape "
                                      f"{tuple(img.shape)} and label shape {tuple(lab.shape)} differ")
            fg = lab > 0 if fg_values is None else torch.isin(lab, fg_values)
            if not bool(fg.any()):
                continue
            if pair_by == "case" and "case" not in item:
                raise VolganDataError(None, f"slice {k} has no 'case' key: use pair_by='all' or SliceDataset items")
            self.eligible.append(k)
            cases.append(item["case"] if pair_by == "case" else 0)
        if len(self.eligible) < 2:
            raise VolganDataError(None, f"same-class pairs need at least 2 slices with foreground, got "
                                  f"{len(self.eligible)} of {len(slices)}")
        groups: dict[Any, list[int]] = {}
        for pos, c in enumerate(cases):
            groups.setdefault(c, []).append(pos)
        everyone = list(range(len(self.eligible)))
        #: per eligible slice: the positions (in ``eligible``) of its possible partners, itself included
        self.groups: list[list[int]] = [groups[c] if len(groups[c]) > 1 else everyone for c in cases]
        rank = {pos: r for members in groups.values() for r, pos in enumerate(members)}
        self._rank = [rank[pos] if len(groups[c]) > 1 else pos for pos, c in enumerate(cases)]
        n_alone = sum(len(groups[c]) == 1 for c in cases)
        if n_alone:
            logger.warning("%d of %d foreground slices are the only one of their case: their partners are drawn "
                           "from all foreground slices", n_alone, len(self.eligible))
        self.rng = np.random.RandomState(seed)

    def __len__(self) -> int:
        return len(self.eligible)

    def _item(self, pos: int) -> dict[str, Any]:
        d = dict(self.slices[self.eligible[pos]])
        return self.transform(d) if self.transform is not None else d

    def partner(self, pos: int) -> int:
        """A random partner (a position in ``eligible``) of the ``pos``-th foreground slice, never itself."""
        group = self.groups[pos]
        r = int(self.rng.randint(len(group) - 1))
        return group[r + (r >= self._rank[pos])]

    def __getitem__(self, pos: int) -> dict[str, Any]:
        a, b = self._item(pos), self._item(self.partner(pos))
        return {"image_i": a["image"], "label_i": a["label"], "image_j": b["image"], "label_j": b["label"],
                "case_i": a.get("case", -1), "case_j": b.get("case", -1)}
