"""Segmentors of the cycle/shape GAN (P2 Sec. 3.3): Refine-Net and PSP-Net variants, 2D and 3D.

Both share one encoder with the U-Net of P2 (two 3^d convs per level, 2^d max-pool, 3 down-samplings);
the U-Net itself comes from MONAI (``make_segmentor("unet")``). Capacity: PSP < U-Net < Refine (P2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets import UNet
from monai.networks.layers.factories import Conv, Pool

from volgan.networks.definition import records_definition

__all__ = ["SegEncoder", "RefineNet", "PSPNet", "CENet", "DACBlock", "RMPBlock", "make_segmentor"]


def _interp(x: torch.Tensor, size: List[int], mode: str) -> torch.Tensor:
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear" if x.dim() == 4 else "trilinear", align_corners=False)


class SegEncoder(nn.Module):
    """Encoder: two 3^d conv + norm + ReLU per level, 2^d max-pool between levels; returns every level's features."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: Sequence[int] = (32, 64, 128, 256),
                 norm: str = "instance"):
        super().__init__()
        self.levels = nn.ModuleList()
        cin = in_channels
        for c in channels:
            self.levels.append(nn.Sequential(
                Convolution(spatial_dims, cin, c, kernel_size=3, act="relu", norm=norm),
                Convolution(spatial_dims, c, c, kernel_size=3, act="relu", norm=norm),
            ))
            cin = c
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats: List[torch.Tensor] = []
        for i, level in enumerate(self.levels):
            x = level(x if i == 0 else self.pool(x))
            feats.append(x)
        return feats


class _RCU(nn.Module):
    """Residual conv unit: x + conv(relu(conv(relu(x))))."""

    def __init__(self, spatial_dims: int, c: int):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.body = nn.Sequential(nn.ReLU(), conv(c, c, 3, padding=1), nn.ReLU(), conv(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class _RefineUnit(nn.Module):
    """One Refine-Net block: RCU on the skip, fusion with the up-sampled coarser path, chained residual pooling."""

    def __init__(self, spatial_dims: int, c_skip: int, c_coarse: int | None, c: int):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.adapt = conv(c_skip, c, 3, padding=1)
        self.rcu = _RCU(spatial_dims, c)
        self.fuse_coarse = conv(c_coarse, c, 3, padding=1) if c_coarse else None
        self.fuse_skip = conv(c, c, 3, padding=1)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=5, stride=1, padding=2)
        self.crp = nn.ModuleList(conv(c, c, 3, padding=1) for _ in range(2))
        self.out = _RCU(spatial_dims, c)

    def forward(self, skip: torch.Tensor, coarse: Optional[torch.Tensor]) -> torch.Tensor:
        x = self.fuse_skip(self.rcu(self.adapt(skip)))
        if coarse is not None and self.fuse_coarse is not None:
            x = x + _interp(self.fuse_coarse(coarse), x.shape[2:], "linear")
        x = F.relu(x)
        path = x
        for conv in self.crp:  # chained residual pooling
            path = conv(self.pool(path))
            x = x + path
        return self.out(x)


class RefineNet(nn.Module):
    """Refine-Net (Lin et al. 2017) on the shared encoder: one refine unit per scale, coarse to fine, with
    long-range residual connections from every encoder level (P2 Sec. 3.3)."""

    @records_definition
    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                 channels: Sequence[int] = (32, 64, 128, 256), refine_channels: int = 64, norm: str = "instance"):
        super().__init__()
        self.encoder = SegEncoder(spatial_dims, in_channels, channels, norm)
        rev = list(reversed(channels))
        self.units = nn.ModuleList(
            _RefineUnit(spatial_dims, c, None if i == 0 else refine_channels, refine_channels) for i, c in enumerate(rev)
        )
        self.head = Conv[Conv.CONV, spatial_dims](refine_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y: Optional[torch.Tensor] = None
        for i, unit in enumerate(self.units):  # coarse to fine
            y = unit(feats[len(feats) - 1 - i], y)
        assert y is not None
        return self.head(y)


class PSPNet(nn.Module):
    """PSP-Net (Zhao et al. 2017) on the shared encoder: pyramid pooling over ``bins`` scales of the deepest
    features, linear up-sampling, concatenation, a 3^d conv and linear up-sampling to the input size (P2)."""

    @records_definition
    def __init__(self, spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                 channels: Sequence[int] = (32, 64, 128, 256), bins: Sequence[int] = (1, 2, 4), norm: str = "instance"):
        super().__init__()
        self.encoder = SegEncoder(spatial_dims, in_channels, channels, norm)
        c = channels[-1]
        pool = {2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[spatial_dims]
        self.stages = nn.ModuleList(
            nn.Sequential(pool(b), Convolution(spatial_dims, c, c // len(bins), kernel_size=1, act="relu", norm=None))
            for b in bins
        )
        fused = c + (c // len(bins)) * len(bins)
        self.bottleneck = Convolution(spatial_dims, fused, c // 2, kernel_size=3, act="relu", norm=norm)
        self.head = Conv[Conv.CONV, spatial_dims](c // 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(x)[-1]
        pyramid = [f] + [_interp(stage(f), f.shape[2:], "linear") for stage in self.stages]
        y = self.head(self.bottleneck(torch.cat(pyramid, 1)))
        return _interp(y, x.shape[2:], "linear")


@records_definition
def make_segmentor(kind: str = "unet", spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 2,
                   channels: Sequence[int] = (32, 64, 128, 256), num_res_units: int = 0,
                   norm: str | None = "instance") -> nn.Module:
    """The one segmentor factory of every pipeline: ``"unet"`` (MONAI ``UNet``, stride-2 down-sampling between
    ``channels``; ``num_res_units`` and ``norm`` as MONAI's, e.g. P5's U-Net has no norm), ``"refinenet"`` or
    ``"pspnet"`` (P2 Sec. 3.3), ``"cenet"`` (P3)."""
    kind = str(kind).lower()
    if kind == "unet":
        return UNet(spatial_dims, in_channels, out_channels, channels=tuple(channels),
                    strides=(2,) * (len(channels) - 1), num_res_units=int(num_res_units), norm=norm)
    if kind == "refinenet":
        return RefineNet(spatial_dims, in_channels, out_channels, channels)
    if kind == "pspnet":
        return PSPNet(spatial_dims, in_channels, out_channels, channels)
    if kind == "cenet":
        return CENet(spatial_dims, in_channels, out_channels, channels)
    raise ValueError(f"unknown segmentor {kind!r}: choose unet, refinenet, pspnet or cenet")


class DACBlock(nn.Module):
    """Dense atrous convolution block of CE-Net (Gu et al. 2019): four cascaded branches with dilation rates
    (1), (3, 1), (1, 3, 1) and (1, 3, 5, 1) summed with the input."""

    def __init__(self, spatial_dims: int, c: int):
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]

        def atrous(d: int) -> nn.Module:
            return conv(c, c, 3, padding=d, dilation=d)

        self.b1 = atrous(1)
        self.b2 = nn.Sequential(atrous(3), conv(c, c, 1))
        self.b3 = nn.Sequential(atrous(1), atrous(3), conv(c, c, 1))
        self.b4 = nn.Sequential(atrous(1), atrous(3), atrous(5), conv(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.b1(x)) + F.relu(self.b2(x)) + F.relu(self.b3(x)) + F.relu(self.b4(x))


class RMPBlock(nn.Module):
    """Residual multi-kernel pooling of CE-Net: max-pooling with kernels 2, 3, 5, 6, a 1-channel 1^d conv each,
    up-sampled and concatenated with the input (``c + 4`` channels out)."""

    def __init__(self, spatial_dims: int, c: int, kernels: Sequence[int] = (2, 3, 5, 6)):
        super().__init__()
        pool = Pool[Pool.MAX, spatial_dims]
        self.pools = nn.ModuleList(pool(kernel_size=k, stride=k) for k in kernels)
        self.kernels = [int(k) for k in kernels]
        self.conv = Conv[Conv.CONV, spatial_dims](c, 1, 1)
        self.out_channels = c + len(kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        maps = [x]
        for i, p in enumerate(self.pools):
            y = p(x) if min(size) >= self.kernels[i] else x  # tiny inputs: skip pooling beyond the size
            maps.append(_interp(self.conv(y), size, "linear"))
        return torch.cat(maps, 1)


class CENet(nn.Module):
    """CE-Net (Gu et al. 2019), the alternative segmentor of P3: encoder, DAC + RMP context extractor, decoder
    with skip additions. The paper's encoder is an ImageNet ResNet-34; pretrained weights cannot be fetched
    here, so the encoder is volgan's ``SegEncoder`` (two convs per level, trained from scratch).
    """

    @records_definition
    def __init__(self, spatial_dims: int = 2, in_channels: int = 1, out_channels: int = 2,
                 channels: Sequence[int] = (32, 64, 128, 256), norm: str = "batch"):
        super().__init__()
        self.encoder = SegEncoder(spatial_dims, in_channels, channels, norm)
        c = channels[-1]
        self.dac = DACBlock(spatial_dims, c)
        self.rmp = RMPBlock(spatial_dims, c)
        rev = list(reversed(channels))
        self.reduce = Conv[Conv.CONV, spatial_dims](self.rmp.out_channels, c, 1)
        self.decoders = nn.ModuleList(
            Convolution(spatial_dims, rev[i], rev[i + 1], kernel_size=3, act="relu", norm=norm)
            for i in range(len(rev) - 1)
        )
        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = self.reduce(self.rmp(self.dac(feats[-1])))
        for i, dec in enumerate(self.decoders):  # coarse to fine, skip additions
            skip = feats[len(feats) - 2 - i]
            y = dec(_interp(y, skip.shape[2:], "linear")) + skip
        return self.head(y)
