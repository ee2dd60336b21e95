"""Building blocks shared by volgan's generators and discriminators (2D and 3D via ``spatial_dims``)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["apply_spectral_norm", "has_spectral_norm", "without_spectral_norm", "SNConvolution", "UpsampleConv",
           "conv_modules"]


def conv_modules(module: nn.Module) -> list[nn.Module]:
    """All convolution layers (any dimensionality, transposed included) inside ``module``."""
    return [m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)]


def has_spectral_norm(conv: nn.Module) -> bool:
    """True when ``conv.weight`` is spectrally normalised by ``torch.nn.utils.parametrizations``."""
    parametrizations = getattr(conv, "parametrizations", None)
    return parametrizations is not None and "weight" in parametrizations


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every conv of ``module`` that lacks it.

    One power iteration per training step (the estimate persists in the ``_u``/``_v`` buffers).
    """
    for conv in conv_modules(module):
        if not has_spectral_norm(conv):
            spectral_norm(conv, n_power_iterations=n_power_iterations)
    return module


def without_spectral_norm(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose spectral-norm parametrisations are folded into plain weights (``W / sigma`` with
    the stored power-iteration vectors, as in eval mode); ``module`` is untouched. TorchScript cannot script
    parametrised modules: the networks' ``__prepare_scriptable__`` hands ``torch.jit.script`` (and MONAI's
    ``ckpt_export``) this copy, so the exported module holds the trained weights as plain tensors."""
    out = copy.deepcopy(module)
    training = out.training
    out.eval()  # sigma from the stored u, v: no power-iteration step while folding
    with torch.no_grad():
        for conv in conv_modules(out):
            if has_spectral_norm(conv):
                # deepcopy shares the injected Parametrized* class, whose property removal would break `module`
                cls = type(conv)
                conv.__class__ = type(cls.__name__, cls.__bases__,
                                      {k: v for k, v in vars(cls).items() if k not in ("__dict__", "__weakref__")})
                parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    return out.train(training)


class SNConvolution(Convolution):
    """MONAI ``Convolution`` (conv -> norm -> act) with optional spectral norm on its conv (MM-GAN Sec. IV-A).

    Args:
        spectral: apply spectral normalisation to the convolution weight.
        other args: as ``monai.networks.blocks.Convolution``.
    """

    def __init__(self, *args, spectral: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        if spectral:
            apply_spectral_norm(self)


class UpsampleConv(nn.Module):
    """Interpolation up-sampling followed by a stride-1 convolution (no transposed conv: no checkerboard).

    MM-GAN Sec. IV-A ("cubic" interpolation; trilinear in 3D since PyTorch has no tricubic mode) and the
    cycle/shape GAN's nearest up-sampling + 3x3x3 conv (P2, Table 1).

    Args:
        spatial_dims: 2 or 3.
        in_channels, out_channels: channels of the conv after up-sampling.
        mode: ``"linear"`` (bilinear/trilinear) or ``"nearest"``.
        scale_factor: up-sampling factor when no target size is given to ``forward``.
        act, norm, spectral: as ``SNConvolution``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        mode: str = "linear",
        scale_factor: float = 2.0,
        act: str | tuple | None = ("leakyrelu", {"negative_slope": 0.2}),
        norm: str | tuple | None = "instance",
        spectral: bool = True,
        kernel_size: int | Sequence[int] = 3,
    ):
        super().__init__()
        if mode not in ("linear", "nearest"):
            raise ValueError(f"mode must be 'linear' or 'nearest', got {mode!r}")
        self.mode = {"linear": {2: "bilinear", 3: "trilinear"}[spatial_dims], "nearest": "nearest"}[mode]
        self.align_corners: Optional[bool] = None if self.mode == "nearest" else False
        self.scale_factor = float(scale_factor)
        self.conv = SNConvolution(
            spatial_dims, in_channels, out_channels, kernel_size=kernel_size, act=act, norm=norm, spectral=spectral
        )

    def forward(self, x: torch.Tensor, size: Optional[List[int]] = None) -> torch.Tensor:
        if size is not None:
            x = F.interpolate(x, size=[int(s) for s in size], mode=self.mode, align_corners=self.align_corners)
        else:
            x = F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode, align_corners=self.align_corners)
        return self.conv(x)
