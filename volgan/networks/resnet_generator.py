"""pix2pix/CycleGAN ResNet generator (P3 Sec. 2.1: 4 conv layers, 9 residual blocks, 2 deconv layers)."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Act, Conv

from volgan.networks.definition import records_definition

__all__ = ["ResidualBlock", "ResnetGenerator"]


class ResidualBlock(nn.Module):
    """``x + norm(conv(act(norm(conv(x)))))`` with 3^d convs (Johnson et al. 2016), optional dropout."""

    def __init__(self, spatial_dims: int, channels: int, norm: str | tuple = "instance", dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            Convolution(spatial_dims, channels, channels, kernel_size=3, act="relu", norm=norm, dropout=dropout or None),
            Convolution(spatial_dims, channels, channels, kernel_size=3, act=None, norm=norm, conv_only=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """The "resnet_9blocks" generator of pix2pix/CycleGAN that P3 uses (image-to-image, e.g. mask+edges -> image).

    c7s1-``ngf`` -> two stride-2 3^d convs (x2 channels each) -> ``n_blocks`` residual blocks -> two stride-2
    transposed convs -> c7s1-``out_channels`` -> tanh: the paper's "4 conv layers, 9 residual blocks, 2 deconv
    layers". Input sizes must be divisible by 4.

    Args:
        spatial_dims: 2 (P3) or 3.
        in_channels, out_channels: e.g. 1 (mask with Canny edges overlaid) or 2 (mask and edges as channels) -> 1.
        ngf: channels of the first layer (64).
        n_blocks: residual blocks (9).
        norm: ``"instance"`` (CycleGAN) or ``"batch"`` (pix2pix).
    """

    @records_definition
    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 1, ngf: int = 64,
                 n_blocks: int = 9, norm: str | tuple = "instance", dropout: float = 0.0):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = [Convolution(spatial_dims, in_channels, ngf, kernel_size=7, act="relu", norm=norm)]
        c = ngf
        for _ in range(2):
            layers.append(Convolution(spatial_dims, c, c * 2, strides=2, kernel_size=3, act="relu", norm=norm))
            c *= 2
        layers += [ResidualBlock(spatial_dims, c, norm, dropout) for _ in range(n_blocks)]
        for _ in range(2):
            layers.append(Convolution(spatial_dims, c, c // 2, strides=2, kernel_size=3, act="relu", norm=norm,
                                      is_transposed=True, output_padding=1))
            c //= 2
        layers += [conv(c, out_channels, kernel_size=7, padding=3), Act["tanh"]()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s % 4 for s in x.shape[2:]):
            raise ValueError(f"spatial size must be divisible by 4, got {tuple(x.shape[2:])}")
        return self.model(x)
