"""WGAN-GP pieces (P4/P5): pair generator and critic, gradient penalty, trainer steps, on-the-fly mixing."""

import pytest
from ignite.engine import Events
import torch

from volgan.config import parse_ratio
from volgan.data import MixedPairsPrepareBatch
from volgan.engines import WganGpTrainer
from volgan.losses import GradientPenalty, WassersteinLoss
from volgan.networks import DCGANCritic, PairGenerator


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_pair_generator_and_critic(dims, size):
    g = PairGenerator(dims, 16, size, 32)
    x = g.sample(3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (3, 2) + (size,) * dims and float(x.abs().max()) <= 1
    img, mask = PairGenerator.split(x)
    assert img.shape[1] == 1 and set(torch.unique(mask).tolist()) <= {0, 1}
    d = DCGANCritic(dims, 2, size, 8)
    assert d(x).shape == (3, 1)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)) for m in d.modules())  # no BN (GP)
    with pytest.raises(ValueError):
        PairGenerator(2, 16, 48)


def test_gradient_penalty_values():
    class Linear(torch.nn.Module):  # D(x) = a . x has gradient a everywhere
        def __init__(self, scale):
            super().__init__()
            self.a = torch.nn.Parameter(torch.full((1, 4), scale))

        def forward(self, x):
            return (x.flatten(1) * self.a).sum(1, keepdim=True)

    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    assert float(GradientPenalty(10)(Linear(0.5), real, fake)) == pytest.approx(0.0, abs=1e-6)  # ||a|| = 1
    assert float(GradientPenalty(10)(Linear(1.0), real, fake)) == pytest.approx(10.0, rel=1e-5)  # (2 - 1)^2
    s = torch.tensor([[1.0], [3.0]])
    assert float(WassersteinLoss()(s, True)) == -2.0 and float(WassersteinLoss()(s, False)) == 2.0


def test_trainer_critic_and_generator_steps():
    torch.manual_seed(0)
    g, d = PairGenerator(2, 8, 16, 16), DCGANCritic(2, 2, 16, 8)
    data = [{"image": torch.rand(4, 1, 16, 16) * 2 - 1, "label": (torch.rand(4, 1, 16, 16) > 0.5).long()}] * 4
    og = torch.optim.Adam(g.parameters(), 1e-4, betas=(0.5, 0.9))
    od = torch.optim.Adam(d.parameters(), 1e-4, betas=(0.5, 0.9))
    t = WganGpTrainer("cpu", 1, data, g, d, og, od, latent_dim=8, n_critic=2)
    g_steps = []
    t.add_event_handler(Events.ITERATION_COMPLETED, lambda e: g_steps.append("g_loss" in e.state.output))
    t.run()
    assert g_steps == [False, True, False, True]  # one G step per n_critic critic steps
    assert float(t.state.output["gp"]) >= 0


def test_mixing_ratios():
    g = PairGenerator(2, 8, 16, 16)
    batch = {"image": torch.zeros(16, 1, 16, 16), "label": torch.zeros(16, 1, 16, 16).long()}
    assert parse_ratio("8-8") == (8, 8)
    for n_real, n_syn in (parse_ratio(r) for r in ("16-0", "8-8", "0-16")):
        img, lab = MixedPairsPrepareBatch(g, n_real, n_syn, latent_dim=8)(batch, torch.device("cpu"))
        assert img.shape == (16, 1, 16, 16) and lab.shape == (16, 1, 16, 16)
        assert bool((img[:n_real] == 0).all())  # the real items come first
        assert set(torch.unique(lab).tolist()) <= {0, 1}
    a = MixedPairsPrepareBatch(g, 8, 8, latent_dim=8, seed=1)(batch)[0]
    b = MixedPairsPrepareBatch(g, 8, 8, latent_dim=8, seed=1)(batch)[0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        MixedPairsPrepareBatch(g, 0, 0)
