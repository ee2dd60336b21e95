"""The private PyTorch contract the deferred non-finite check relies on (issue #23 item 4): fused Adam says it
supports AMP scaling, and skips its step when ``optimizer.found_inf`` is set (what GradScaler does). If a PyTorch
release changes either, these fail before a training run silently applies NaN steps."""

import pytest
import torch

from volgan.engines.base import _supports_found_inf


def _fused_adam():
    p = torch.nn.Parameter(torch.ones(4))
    try:
        opt = torch.optim.Adam([p], lr=0.1, fused=True)
    except (RuntimeError, ValueError) as e:  # no fused kernel for this device in this build
        pytest.skip(f"fused Adam unavailable here: {e}")
    return p, opt


def test_fused_adam_declares_amp_scaling_support():
    _, opt = _fused_adam()
    assert getattr(opt, "_step_supports_amp_scaling", False) is True
    assert _supports_found_inf(opt)
    assert not _supports_found_inf(torch.optim.Adam([torch.nn.Parameter(torch.ones(1))], lr=0.1))


def test_found_inf_skips_the_step_and_zero_does_not():
    p, opt = _fused_adam()
    p.grad = torch.ones(4)
    opt.found_inf = torch.tensor(1.0)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(4))  # skipped
    opt.found_inf = torch.tensor(0.0)
    opt.step()
    assert (p.detach() < 1).all()  # applied
