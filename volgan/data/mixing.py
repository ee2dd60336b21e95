"""Mixing real and synthetic pairs into one training datalist at a chosen ratio (P1 Sec. V-C: 100/300/500 % F + R)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from volgan.errors import VolganConfigError

__all__ = ["mix_datalists"]


def mix_datalists(real: Sequence[Mapping[str, Any]], synthetic: Sequence[Mapping[str, Any]], percent: float = 100.0,
                  seed: int = 0, tag: bool = True) -> list[dict[str, Any]]:
    """Real pairs plus ``percent`` % of their count in synthetic pairs (MM-GAN: 100, 300, 500).

    Synthetic entries are drawn without replacement (seeded); asking for more than exist is an error, so a
    table's "300 %" is never silently 150 %. With ``tag``, entries get ``"synthetic": 0/1``.
    """
    if percent < 0:
        raise VolganConfigError(f"percent must be >= 0, got {percent}")
    n = int(round(len(real) * percent / 100.0))
    if n > len(synthetic):
        raise VolganConfigError(f"{percent:g} % of {len(real)} real cases needs {n} synthetic pairs, only "
                                f"{len(synthetic)} given: synthesise more copies (perturbation seeds)")
    idx = np.random.RandomState(seed).permutation(len(synthetic))[:n]
    out = [dict(r, **({"synthetic": 0} if tag else {})) for r in real]
    out += [dict(synthetic[i], **({"synthetic": 1} if tag else {})) for i in sorted(idx)]
    return out
