"""ConditionalGanTrainer on tiny tensors: one iteration updates G and D; determinism; non-finite guard."""

import math

import pytest
import torch
from ignite.engine import Events

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


def test_segmentor_in_the_loop_p3_stage1():
    """P3 stage 1: G (mask + edges -> image), D on (mask, image) with BCE, and S trained on G's images."""
    from volgan.losses import BCEGANLoss, L1SoftmaxLoss
    from volgan.networks import CENet, ResnetGenerator

    torch.manual_seed(0)
    g, s = ResnetGenerator(2, 1, 1, ngf=4, n_blocks=2), CENet(2, 1, 2, (4, 8, 16))
    d = PatchDiscriminator(2, 1, 1, channels=(4, 8, 8), strides=(2, 2, 1), norm="batch", spectral=False)
    gen = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 1, 32, 32, generator=gen) > 0.5).long()
    data = [{"cond": mask.float(), "mask_only": mask.float(), "image": torch.rand(2, 1, 32, 32, generator=gen),
             "label": mask}]
    opt = lambda m: torch.optim.Adam(m.parameters(), lr=1e-3)  # noqa: E731
    t = ConditionalGanTrainer("cpu", 1, data, g, d, opt(g), opt(d), adv_loss=BCEGANLoss(), lambda_rec=100.0,
                              d_cond_key="mask_only", s_network=s, s_optimizer=opt(s))
    s0 = _flat(s)
    t.run()
    assert not torch.equal(s0, _flat(s))
    assert math.isfinite(float(t.state.output["s_loss"])) and float(t.state.output["g_rec"]) > 0
    logits = torch.tensor([[[[9.0]], [[-9.0]]]])
    assert float(L1SoftmaxLoss()(logits, torch.zeros(1, 1, 1, 1))) < 1e-3
    assert float(BCEGANLoss()(torch.full((1, 1, 2, 2), 20.0), True, True)) < 1e-6


def test_spectral_norm_one_power_iteration_per_optimiser_step(monkeypatch):
    """Per iteration: G's normalised weights computed once (one forward); D's once for the D step (real and fake
    passes share it) and once for the G step (D's weights changed in between): 2, not one per D forward (3)."""
    from torch.nn.utils.parametrizations import _SpectralNorm

    calls = {"g": 0, "d": 0}
    owner: dict[int, str] = {}
    orig = _SpectralNorm.forward

    def counting(self, weight):
        calls[owner[id(self)]] += 1
        return orig(self, weight)

    t, g, d = _setup(n=3)
    for name, net in (("g", g), ("d", d)):
        for m in net.modules():
            if isinstance(m, _SpectralNorm):
                owner[id(m)] = name
    n_sn = {k: sum(v == k for v in owner.values()) for k in ("g", "d")}
    assert n_sn["g"] > 0 and n_sn["d"] > 0
    monkeypatch.setattr(_SpectralNorm, "forward", counting)
    t.run()
    assert calls["g"] == 3 * n_sn["g"] and calls["d"] == 3 * 2 * n_sn["d"], (calls, n_sn)


def _plain_gan(seed=0, sgd=False):
    torch.manual_seed(seed)
    g = SNUNetGenerator(3, 5, 1, channels=(4, 8), spectral=False)
    d = PatchDiscriminator(3, 1, 5, channels=(4, 8), strides=(2, 2), spectral=False)
    if sgd:  # linear in the gradient (Adam's first step is ~lr * sign(grad): rounding flips it where grad ~ 0)
        return g, d, torch.optim.SGD(g.parameters(), lr=0.1), torch.optim.SGD(d.parameters(), lr=0.1)
    og = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.0, 0.9))
    od = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.9))
    return g, d, og, od


def test_gradient_accumulation_equals_one_step_on_the_concatenated_batch():
    """grad_accum_steps=2 over two batch-1 iterations == one iteration on the batch of both (per-sample instance
    norm, no pool, no spectral norm, SGD): exactly for D; for G when D does not move (lr 0), since inside a window
    G's gradient sees D as it was at the window's start; and nothing steps inside a window."""
    from ignite.engine import Events

    gen = torch.Generator().manual_seed(5)
    lab = torch.randint(0, 5, (2, 16, 16, 16), generator=gen)
    cond = torch.nn.functional.one_hot(lab, 5).permute(0, 4, 1, 2, 3).float()
    real = torch.rand(2, 1, 16, 16, 16, generator=gen) * 2 - 1
    singles = [{"cond": cond[i:i + 1], "image": real[i:i + 1]} for i in range(2)]
    for d_lr in (0.1, 0.0):
        g1, d1, og1, od1 = _plain_gan(sgd=True)
        od1.param_groups[0]["lr"] = d_lr
        acc = ConditionalGanTrainer("cpu", 1, singles, g1, d1, og1, od1, pool=ImagePool(0), grad_accum_steps=2)
        g0, seen = _flat(g1), []
        acc.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(torch.equal(_flat(g1), g0)))
        acc.run()
        assert seen == [True, False]  # no step after the first micro-batch, one after the second

        g2, d2, og2, od2 = _plain_gan(sgd=True)
        od2.param_groups[0]["lr"] = d_lr
        both = ConditionalGanTrainer("cpu", 1, [{"cond": cond, "image": real}], g2, d2, og2, od2, pool=ImagePool(0))
        both.run()
        torch.testing.assert_close(_flat(d1), _flat(d2), rtol=1e-5, atol=1e-6)
        if d_lr == 0.0:
            torch.testing.assert_close(_flat(g1), _flat(g2), rtol=1e-5, atol=1e-6)


def test_gradient_accumulation_skips_a_window_with_a_nonfinite_loss():
    g, d, og, od = _plain_gan()
    gen = torch.Generator().manual_seed(1)
    lab = torch.randint(0, 5, (4, 16, 16, 16), generator=gen)
    cond = torch.nn.functional.one_hot(lab, 5).permute(0, 4, 1, 2, 3).float()
    real = torch.rand(4, 1, 16, 16, 16, generator=gen) * 2 - 1
    real[1] = float("nan")  # second micro-batch of the first window
    data = [{"cond": cond[i:i + 1], "image": real[i:i + 1]} for i in range(4)]
    t = ConditionalGanTrainer("cpu", 1, data, g, d, og, od, pool=ImagePool(0), grad_accum_steps=2)
    d0 = _flat(d)
    t.run()
    assert t.state.nonfinite_steps >= 1  # the first D window was skipped, not stepped on NaN
    assert torch.isfinite(_flat(d)).all() and not torch.equal(_flat(d), d0)  # the second window stepped
    with pytest.raises(ValueError, match="grad_accum_steps"):
        ConditionalGanTrainer("cpu", 1, data, g, d, og, od, grad_accum_steps=0)


def test_cpu_bf16_autocast_on_request_only():
    """amp + amp_dtype bfloat16 autocasts on a CPU (G's output is bf16, the steps stay finite); amp with the
    default float16 is CUDA-only and leaves a CPU run in fp32."""
    for dtype, expected in (("bfloat16", torch.bfloat16), ("float16", torch.float32)):
        g, d, og, od = _plain_gan()
        gen = torch.Generator().manual_seed(2)
        lab = torch.randint(0, 5, (1, 16, 16, 16), generator=gen)
        data = [{"cond": torch.nn.functional.one_hot(lab, 5).permute(0, 4, 1, 2, 3).float(),
                 "image": torch.rand(1, 1, 16, 16, 16, generator=gen) * 2 - 1}] * 2
        t = ConditionalGanTrainer("cpu", 1, data, g, d, og, od, pool=ImagePool(2, seed=0), amp=True, amp_dtype=dtype)
        g0 = _flat(g)
        t.run()
        assert t.state.output["fake"].dtype == expected, dtype
        assert t.state.nonfinite_steps == 0 and not torch.equal(_flat(g), g0)
        assert torch.isfinite(_flat(g)).all() and _flat(g).dtype == torch.float32  # fp32 master weights


def _fused_gan_trainer(n=8, **kwargs):
    torch.manual_seed(0)
    g = SNUNetGenerator(3, 5, 1, channels=(4, 8), spectral=False)
    d = PatchDiscriminator(3, 1, 5, channels=(4, 8), strides=(2, 2), spectral=False)
    og = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.0, 0.9), fused=True)
    od = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.9), fused=True)
    gen = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 5, (n, 16, 16, 16), generator=gen)
    data = [{"cond": torch.nn.functional.one_hot(lab[i], 5).permute(3, 0, 1, 2)[None].float(),
             "image": torch.rand(1, 1, 16, 16, 16, generator=gen) * 2 - 1} for i in range(n)]
    t = ConditionalGanTrainer("cpu", 1, data, g, d, og, od, pool=ImagePool(0), epoch_length=n, **kwargs)
    return t, g, d


class _NaNAt(torch.nn.Module):
    """LSGAN loss that is NaN at the given iterations (every iteration when ``at`` is None)."""

    def __init__(self, engine, at=None):
        super().__init__()
        self.engine, self.at = engine, at

    def forward(self, x, target_is_real, for_discriminator=True):
        loss = torch.mean((x - float(target_is_real)) ** 2)
        return loss * float("nan") if self.at is None or self.engine.state.iteration in self.at else loss


def _host_reads(monkeypatch, t):
    """Count host reads of tensors (bool/item/tolist/float/int) made inside ``t.optimise``, per iteration."""
    reads, inside = {}, [False]
    for meth in ("__bool__", "item", "tolist", "__float__", "__int__"):
        orig = getattr(torch.Tensor, meth)

        def wrapped(self, *a, _orig=orig, **k):
            if inside[0]:
                reads[t.state.iteration] = reads.get(t.state.iteration, 0) + 1
            return _orig(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, meth, wrapped)
    optimise = t.optimise

    def counted(*a, **k):
        inside[0] = True
        try:
            return optimise(*a, **k)
        finally:
            inside[0] = False
    monkeypatch.setattr(t, "optimise", counted)
    return reads


def test_deferred_nonfinite_check_skips_on_the_device_without_host_syncs(monkeypatch):
    """nonfinite_check_interval=4 with fused optimisers (the CUDA default is 50): a NaN step is skipped on the
    device (weights and Adam state unchanged), no tensor is read on the host inside ``optimise`` except at the
    checks (iterations 4 and 8), and the skipped steps are counted at the check."""
    t, g, d = _fused_gan_trainer(nonfinite_check_interval=4)
    t.adv_loss = _NaNAt(t, at={2})
    reads = _host_reads(monkeypatch, t)
    seen = {}

    @t.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        seen[engine.state.iteration] = (_flat(g), _flat(d), engine.state.nonfinite_steps,
                                        int(t.optimizers["d"].state[next(d.parameters())]["step"]))

    t.run()
    assert torch.equal(seen[2][0], seen[1][0]) and torch.equal(seen[2][1], seen[1][1])  # G and D skipped
    assert seen[2][3] == seen[1][3] == 1 and seen[3][3] == 2  # Adam's step count did not advance
    assert not torch.equal(seen[3][0], seen[2][0])  # later steps go on
    assert [seen[i][2] for i in (1, 2, 3, 4, 8)] == [0, 0, 0, 2, 2]  # D and G of iteration 2, counted at 4
    assert set(reads) == {4, 8}, reads  # host reads only at the checks
    assert torch.isfinite(_flat(g)).all() and torch.isfinite(_flat(d)).all()


def test_deferred_nonfinite_check_stops_at_the_check():
    t, g, d = _fused_gan_trainer(nonfinite_check_interval=4, max_nonfinite_steps=3)
    t.adv_loss = _NaNAt(t)
    g0, d0 = _flat(g), _flat(d)
    with pytest.raises(NonFiniteLossError, match="consecutive non-finite"):
        t.run()
    assert t.state.iteration == 4 and t.state.nonfinite_steps >= 3
    assert torch.equal(g0, _flat(g)) and torch.equal(d0, _flat(d))  # every step was skipped on the device


def test_deferred_check_with_an_unfused_optimiser_falls_back_to_a_host_check(caplog):
    g, d, og, od = _plain_gan()
    t, _, _ = _fused_gan_trainer(nonfinite_check_interval=4)
    t2 = ConditionalGanTrainer("cpu", 1, t.data_loader, g, d, og, od, pool=ImagePool(0), epoch_length=2,
                               nonfinite_check_interval=4)
    t2.adv_loss = _NaNAt(t2, at={1})
    g0 = _flat(g)
    with caplog.at_level("WARNING"):
        t2.run()
    assert "is not fused" in caplog.text
    assert t2.state.nonfinite_steps == 2  # counted the step it happened (D and G of iteration 1)
    assert torch.isfinite(_flat(g)).all() and not torch.equal(g0, _flat(g))
    with pytest.raises(ValueError, match="nonfinite_check_interval"):
        ConditionalGanTrainer("cpu", 1, t.data_loader, g, d, og, od, nonfinite_check_interval=0)
