"""ConditionalGanTrainer on tiny tensors: one iteration updates G and D; determinism; non-finite guard."""

import math

import pytest
import torch

from volgan.engines import ConditionalGanTrainer, ImagePool, NonFiniteLossError
from volgan.networks import PatchDiscriminator, SNUNetGenerator


def _setup(seed=0, lr=1e-3, n=4):
    torch.manual_seed(seed)
    g = SNUNetGenerator(3, 5, 1, channels=(4, 8))
    d = PatchDiscriminator(3, 1, 5, channels=(4, 8), strides=(2, 2))
    gen = torch.Generator().manual_seed(seed)
    lab = torch.randint(0, 5, (n, 1, 16, 16, 16), generator=gen)
    data = [{"cond": torch.nn.functional.one_hot(lab[i, 0], 5).permute(3, 0, 1, 2)[None].float(),
             "image": torch.rand(1, 1, 16, 16, 16, generator=gen) * 2 - 1} for i in range(n)]
    og = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.0, 0.9))
    od = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.0, 0.9))
    t = ConditionalGanTrainer("cpu", 1, data, g, d, og, od, pool=ImagePool(2, seed=seed), epoch_length=n)
    return t, g, d


def _flat(m):
    return torch.cat([p.detach().flatten().clone() for p in m.parameters()])


def test_one_iteration_changes_g_and_d():
    t, g, d = _setup(n=1)
    g0, d0 = _flat(g), _flat(d)
    t.run()
    assert not torch.equal(g0, _flat(g)) and not torch.equal(d0, _flat(d))
    out = t.state.output
    for k in ("g_loss", "d_loss", "d_real", "d_fake"):
        assert math.isfinite(float(out[k]))
    assert out["fake"].shape == (1, 1, 16, 16, 16)
    assert len(t.pool) == 1


def test_two_runs_with_same_seed_are_bitwise_identical():
    a, ga, da = _setup(seed=3)
    a.run()
    b, gb, db = _setup(seed=3)
    b.run()
    assert torch.equal(_flat(ga), _flat(gb)) and torch.equal(_flat(da), _flat(db))


def test_nonfinite_loss_is_skipped_then_stops():
    t, g, d = _setup(n=4)
    t.max_nonfinite_steps = 3
    g0 = _flat(g)

    class NaNLoss(torch.nn.Module):
        def forward(self, x, target_is_real, for_discriminator=True):
            return x.mean() * float("nan")

    t.adv_loss = NaNLoss()
    with pytest.raises(NonFiniteLossError, match="consecutive non-finite"):
        t.run()
    assert torch.equal(g0, _flat(g))  # no step was taken with NaN gradients
    assert t.state.nonfinite_steps >= 3
