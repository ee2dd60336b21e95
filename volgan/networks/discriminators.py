"""Discriminators: spectral-norm PatchGAN on (condition, image) pairs (P1 Sec. IV-B, Fig. 4); DenseNet critic with
layer norm on image pairs (P4 Sec. II-C)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Dropout, Pool
from monai.networks.layers.utils import get_act_layer, get_norm_layer
from monai.networks.nets.densenet import _DenseBlock, _Transition

from volgan.networks.definition import records_definition
from volgan.networks.blocks import SNConvolution, apply_spectral_norm

__all__ = ["PatchDiscriminator", "DenseNetCritic"]


class PatchDiscriminator(nn.Module):
    """PatchGAN (SimGAN-style local discriminator) with a per-patch score map (P1 Sec. IV-B; P2 Table 1).

    ``len(channels)`` conv layers with kernel ``kernel_size`` and the given ``strides`` (MM-GAN: the first two
    stride 2, so the map is 1/4 of the input), then a conv to one channel. No sigmoid by default (LSGAN scores).
    With ``cond_channels > 0`` the input is the concatenation (condition, image), e.g. one-hot label map + MR.

    Decisions where MM-GAN is silent (SPEC.md P1): 4^d convs, strides (2, 2, 1), channels (64, 128, 256),
    spectral norm on every conv, no normalisation layer, LeakyReLU 0.2.

    Args:
        spatial_dims: 2 or 3.
        in_channels: image channels.
        cond_channels: channels of the condition concatenated before the image (0 for an unconditional D).
        channels: widths of the hidden layers.
        strides: one stride per hidden layer (an int, or one per spatial axis for anisotropic patches, e.g.
            ``(2, 2, 1)`` keeps the slices of a thin 3D patch); the final 1-channel conv has stride 1.
        kernel_size: conv kernel size.
        norm: normalisation of hidden layers after the first (``None`` with spectral norm, as in MM-GAN;
            ``"instance"`` for the pix2pix/P2 PatchGAN).
        spectral: spectral norm on every conv.
        output_act: ``None`` (LSGAN) or e.g. ``"sigmoid"`` (P2 Table 1 lists one).
    """

    @records_definition
    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        cond_channels: int = 5,
        channels: Sequence[int] = (64, 128, 256),
        strides: Sequence[int] = (2, 2, 1),
        kernel_size: int = 4,
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.2}),
        norm: str | tuple | None = None,
        spectral: bool = True,
        output_act: str | None = None,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        channels, strides = tuple(channels), tuple(strides)
        if len(channels) != len(strides) or not channels:
            raise ValueError(f"channels {channels} and strides {strides} must be non-empty and of equal length")
        self.spatial_dims = spatial_dims
        self.cond_channels = cond_channels
        layers: list[nn.Module] = []
        cin = in_channels + cond_channels
        pad = (kernel_size - 1) // 2
        for i, (c, s) in enumerate(zip(channels, strides)):
            layers.append(
                SNConvolution(
                    spatial_dims, cin, c, strides=s, kernel_size=kernel_size, padding=pad, act=act,
                    norm=None if i == 0 else norm, spectral=spectral,
                )
            )
            cin = c
        final = Conv[Conv.CONV, spatial_dims](cin, 1, kernel_size=kernel_size, stride=1, padding=pad)
        if spectral:
            apply_spectral_norm(final)
        layers.append(final)
        if output_act == "sigmoid":
            layers.append(nn.Sigmoid())
        elif output_act is not None:
            raise ValueError(f"output_act must be None or 'sigmoid', got {output_act!r}")
        self.model = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.cond_channels:
            if cond is None:
                raise ValueError("this discriminator is conditional: pass the condition (e.g. one-hot label map)")
            image = torch.cat([cond.to(image.dtype), image], dim=1)
        return self.model(image)


class DenseNetCritic(nn.Module):
    """WGAN-GP critic of the generative adversarial U-Net: a DenseNet with layer norm that scores image pairs
    (P4 Sec. II-C, Fig. 1): real ``{x_i, x_j}`` (two images of one class) vs fake ``{x_i, x_g}``.

    A 3^d stem conv (``stem_stride`` 1: no max-pool, so a 32^2 slice still has 2^2 pixels after the four
    transitions; use 2 or 4 on large images), then ``len(block_config)`` dense blocks (MONAI's ``_DenseBlock``:
    DenseNet-BC layers, a 1^d bottleneck and a 3^d conv adding ``growth_rate`` maps; P4: 4 blocks of 4, growth 64),
    each ended by a dropout layer and followed by a transition (MONAI's ``_Transition``: norm, act, 1^d conv
    halving the channels, 2^d average pooling; P4: 4 transitions, the last before the head); then norm, act,
    global average pooling and a linear score (no sigmoid).

    Layer norm instead of batch norm (P4) is ``GroupNorm`` with one group: each sample is normalised over all its
    channels and positions, with per-channel affine weights. It involves no other sample of the batch, so the
    gradient penalty, taken per sample at interpolates, stays well defined (batch norm would couple the samples).

    ``forward(x, cond)`` scores ``cat(cond, x)``: ``cond`` is the pair's first image ``x_i`` (kept fixed by
    ``GradientPenalty(cond=...)``), ``x`` the second (``x_j`` or ``x_g``); without ``cond``, ``x`` is the pair.

    Args:
        spatial_dims: 2 (P4) or 3.
        in_channels: channels of the whole pair (P4 in volgan: 2 + 2, image and mask per element).
        init_features: channels of the stem.
        growth_rate: maps added per dense layer (P4: 64).
        block_config: dense layers per block (P4: 4, 4, 4, 4).
        bn_size: bottleneck width factor of the dense layers (``bn_size * growth_rate``).
        dropout: rate of the dropout ending every dense block.
        stem_stride: stride of the stem conv (1, 2, 4...).
        act: activation (LeakyReLU 0.2, the usual for WGAN critics; P4 does not say).
        norm: ``("group", {"num_groups": 1})`` = layer norm (P4).
    """

    @records_definition
    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 4,
        init_features: int = 64,
        growth_rate: int = 64,
        block_config: Sequence[int] = (4, 4, 4, 4),
        bn_size: int = 4,
        dropout: float = 0.2,
        stem_stride: int = 1,
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.2}),
        norm: str | tuple = ("group", {"num_groups": 1}),
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        block_config = tuple(int(b) for b in block_config)
        if not block_config or min(block_config) < 1 or stem_stride < 1 or not 0 <= dropout < 1:
            raise ValueError(f"invalid block_config {block_config}, stem_stride {stem_stride} or dropout {dropout}")
        self.spatial_dims, self.in_channels = spatial_dims, int(in_channels)
        self.min_size = int(stem_stride) * 2 ** len(block_config)
        layers: list[tuple[str, nn.Module]] = [
            ("conv0", Conv[Conv.CONV, spatial_dims](in_channels, init_features, kernel_size=3, stride=stem_stride,
                                                    padding=1)),
        ]
        c = init_features
        for i, n in enumerate(block_config):
            layers.append((f"denseblock{i + 1}", _DenseBlock(spatial_dims, n, c, bn_size, growth_rate, 0.0, act, norm)))
            c += n * growth_rate
            layers.append((f"dropout{i + 1}", Dropout[Dropout.DROPOUT, spatial_dims](dropout)))
            layers.append((f"transition{i + 1}", _Transition(spatial_dims, c, c // 2, act, norm)))
            c //= 2
        layers += [("norm", get_norm_layer(norm, spatial_dims, c)), ("act", get_act_layer(act)),
                   ("pool", Pool[Pool.ADAPTIVEAVG, spatial_dims](1)), ("flatten", nn.Flatten(1))]
        self.features = nn.Sequential(OrderedDict(layers))
        self.score = nn.Linear(c, 1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is not None:
            x = torch.cat([cond.to(x.dtype), x], dim=1)
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"critic expects (B, {self.in_channels}, ...) pairs, got {tuple(x.shape)}")
        if any(s < self.min_size for s in x.shape[2:]):
            raise ValueError(f"critic needs inputs of at least {self.min_size} per side, got {tuple(x.shape[2:])}")
        return self.score(self.features(x))
