import collections

import pytest
import torch

from volgan.engines import ImagePool


def _item(v):
    return torch.full((1, 1, 2, 2, 2), float(v)), torch.full((1, 5, 2, 2, 2), float(v))


def test_pool_fills_then_returns_current():
    pool = ImagePool(4, seed=0)
    for v in range(4):
        img, cond = pool.query(*_item(v))
        assert float(img.mean()) == v and float(cond.mean()) == v
    assert len(pool) == 4


def test_pool_swap_statistics_and_pairs_travel_together():
    pool = ImagePool(4, swap_prob=0.5, seed=123)
    for v in range(4):
        pool.query(*_item(v))
    n, swaps, slots = 4000, 0, collections.Counter()
    for v in range(100, 100 + n):
        before = [float(t.mean()) for t in pool.images]
        img, cond = pool.query(*_item(v))
        assert float(img.mean()) == float(cond.mean())  # image and label map stay a tuple
        if float(img.mean()) != v:
            swaps += 1
            slots[before.index(float(img.mean()))] += 1
    assert abs(swaps / n - 0.5) < 0.03  # 4000 draws: sd ~0.008
    for k in range(4):
        assert abs(slots[k] / swaps - 0.25) < 0.04  # uniform choice of slot


def test_pool_seed_repeatable_and_batch():
    def run(seed):
        pool = ImagePool(4, seed=seed)
        out = []
        for v in range(20):
            img, _ = pool.query(torch.full((3, 1, 2, 2, 2), float(v)), torch.zeros(3, 5, 2, 2, 2))
            out.append(img.flatten()[::8].tolist())
        return out

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_pool_disabled_and_state_dict_roundtrip():
    img, cond = _item(3)
    a, b = ImagePool(0).query(img, cond)
    assert a is img and b is cond
    pool = ImagePool(2, seed=1)
    for v in range(5):
        pool.query(*_item(v))
    clone = ImagePool(2, seed=99)
    clone.load_state_dict(pool.state_dict())
    for v in range(10, 20):
        x, _ = pool.query(*_item(v))
        y, _ = clone.query(*_item(v))
        assert torch.equal(x, y)
    with pytest.raises(ValueError):
        ImagePool(3).load_state_dict(pool.state_dict())
