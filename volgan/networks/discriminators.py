"""Discriminators: spectral-norm PatchGAN on (condition, image) pairs (P1 Sec. IV-B, Fig. 4)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

from volgan.networks.blocks import SNConvolution, apply_spectral_norm

__all__ = ["PatchDiscriminator"]


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
        strides: one stride per hidden layer; the final 1-channel conv has stride 1.
        kernel_size: conv kernel size.
        norm: normalisation of hidden layers after the first (``None`` with spectral norm, as in MM-GAN;
            ``"instance"`` for the pix2pix/P2 PatchGAN).
        spectral: spectral norm on every conv.
        output_act: ``None`` (LSGAN) or e.g. ``"sigmoid"`` (P2 Table 1 lists one).
    """

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
