"""DCGAN-style generator of image + mask pairs and its critic (P5, Sec. 2: WGAN-GP on image-mask pairs)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv

from volgan.networks.definition import records_definition

__all__ = ["PairGenerator", "DCGANCritic", "he_init"]


def _doublings(size: int) -> int:
    """Number of x2 steps between a 4^d map and ``size`` (a power of two >= 8)."""
    n = int(math.log2(size)) - 2
    if n < 1 or 2 ** (n + 2) != size:
        raise ValueError(f"size must be a power of two >= 8, got {size}")
    return n


def he_init(module: nn.Module) -> nn.Module:
    """He (Kaiming) normal initialisation of every conv and linear weight, zero biases (P5)."""
    for m in module.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


class PairGenerator(nn.Module):
    """Noise -> (image, mask) as the channels of one tensor (P5): a linear projection to a 4^d map, then stride-2
    transposed convs (batch norm + ReLU), halving the channels, to ``size``; tanh output in [-1, 1]. The mask is
    channel 1 (threshold at 0 to binarise: ``PairGenerator.split``). He initialisation.

    Args:
        spatial_dims: 2 (P5) or 3.
        latent_dim: noise size.
        size: output edge length, a power of two >= 8 (P5: 256).
        channels: channels of the first map (halved at each up-sampling, at least 8).
        out_channels: 2 (image + mask); more for several image channels + mask.
    """

    @records_definition
    def __init__(self, spatial_dims: int = 2, latent_dim: int = 100, size: int = 256, channels: int = 512,
                 out_channels: int = 2):
        super().__init__()
        n_up = _doublings(size)
        self.spatial_dims, self.latent_dim, self.c0 = spatial_dims, latent_dim, channels
        self.project = nn.Linear(latent_dim, channels * 4**spatial_dims)
        self.bn0 = {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
        layers, c = [], channels
        deconv, bn = Conv[Conv.CONVTRANS, spatial_dims], {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims]
        for i in range(n_up):
            last = i == n_up - 1
            cout = out_channels if last else max(c // 2, 8)
            layers.append(deconv(c, cout, kernel_size=4, stride=2, padding=1))  # exact x2
            if not last:
                layers += [bn(cout), nn.ReLU()]
            c = cout
        self.up = nn.Sequential(*layers)
        he_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z.flatten(1)).view(z.shape[0], self.c0, *(4,) * self.spatial_dims)
        return torch.tanh(self.up(torch.relu(self.bn0(x))))

    def sample(self, n: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator).to(device or next(self.parameters()).device)
        return self(z)

    @staticmethod
    def split(pairs: torch.Tensor, threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(image channels, binary mask): the last channel thresholded at ``threshold`` (P5: 0)."""
        return pairs[:, :-1], (pairs[:, -1:] > threshold).long()


class DCGANCritic(nn.Module):
    """WGAN-GP critic on image-mask pairs (P5): stride-2 4^d convs with LeakyReLU 0.2 and *no* batch norm (the
    gradient penalty is per sample), a linear score. He initialisation."""

    @records_definition
    def __init__(self, spatial_dims: int = 2, in_channels: int = 2, size: int = 256, channels: int = 64,
                 max_channels: int = 512):
        super().__init__()
        n_down = _doublings(size)
        layers, c = [], in_channels
        for i in range(n_down):
            cout = min(channels * 2**i, max_channels)
            layers.append(Convolution(spatial_dims, c, cout, strides=2, kernel_size=4, padding=1,
                                      act=("leakyrelu", {"negative_slope": 0.2}), norm=None))
            c = cout
        self.features = nn.Sequential(*layers)
        self.score = nn.Linear(c * 4**spatial_dims, 1)
        self.size = size
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(s != self.size for s in x.shape[2:]):
            raise ValueError(f"critic expects {self.size}^d inputs, got {tuple(x.shape[2:])}")
        return self.score(self.features(x).flatten(1))
