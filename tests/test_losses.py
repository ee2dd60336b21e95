import pytest
import torch

from volgan.losses import LSGANLoss


def test_lsgan_known_values():
    loss = LSGANLoss()
    ones, zeros = torch.ones(1, 1, 3, 3, 3), torch.zeros(1, 1, 3, 3, 3)
    assert float(loss(ones, True, True)) == 0.0
    assert float(loss(zeros, False, True)) == 0.0
    assert float(loss(zeros, True, True)) == pytest.approx(0.5)  # 0.5 * (0 - 1)^2
    assert float(loss(ones, False, True)) == pytest.approx(0.5)
    assert float(loss(torch.full((2, 1, 4, 4), 3.0), True, False)) == pytest.approx(0.5 * 4)  # G: (3 - 1)^2 / 2
    x = torch.tensor([[0.5, -1.0]])
    assert float(loss(x, False, True)) == pytest.approx(0.5 * (0.25 + 1.0) / 2)
    assert float(LSGANLoss(weight=1.0)(x, True, True)) == pytest.approx((0.25 + 4.0) / 2)


def test_lsgan_gradient_direction():
    s = torch.zeros(1, 1, 2, 2, 2, requires_grad=True)
    LSGANLoss()(s, True, False).backward()
    assert (s.grad < 0).all()  # G pushes D(fake) up towards 1
