"""MM-GAN generator: spectral-norm U-Net, label map -> image (P1, Sec. IV-A, Fig. 3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Act, Conv, Pool

from volgan.networks.blocks import SNConvolution, UpsampleConv, apply_spectral_norm

__all__ = ["SNUNetGenerator", "cycle_generator"]


class SNUNetGenerator(nn.Module):
    """U-Net generator of MM-GAN (P1 Sec. IV-A): label map (one-hot) -> image in [-1, 1].

    One input block at full resolution (two 3^d convs to ``channels[0]``), ``len(channels) - 1`` down blocks
    (2^d max-pool stride 2, two convs, channels doubling), as many up blocks (interpolation x2 and a conv that
    halves the channels, concatenation with the skip, two convs) and an output block (1^d conv, tanh).
    Every conv is followed by instance norm and LeakyReLU, and every conv (output conv included) carries
    spectral normalisation. No transposed convolution. Inputs of any size work: up-sampling targets the skip's
    size, so odd shapes need no padding.

    Decisions where the paper is silent (SPEC.md P1): two convs per block, channels (16, 32, 64, 128),
    trilinear instead of "cubic" interpolation (PyTorch has no tricubic mode).

    Args:
        spatial_dims: 2 or 3.
        in_channels: label-map channels (one-hot classes, 5 for BraTS {0, 1, 2, 3, 4}).
        out_channels: image channels (one modality, or several as channels).
        channels: widths per level; ``channels[0]`` at full resolution.
        act: activation (MONAI ``Act`` spec).
        norm: normalisation (MONAI ``Norm`` spec).
        spectral: spectral norm on every conv.
        upsample_mode: ``"linear"`` (paper) or ``"nearest"``.
        output_act: ``"tanh"`` (paper) or ``None``.
        downsample: ``"maxpool"`` (MM-GAN: 2^d max-pool, then two convs) or ``"conv"`` (the cycle/shape GAN's
            generator, P2 Table 1: a stride-2 3^d conv, then one conv).

    The P2 generator is this class with ``downsample="conv"``, ``upsample_mode="nearest"``, ``spectral=False``
    and channels (32, 64, 256, 256): see ``volgan.networks.cycle_generator``.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 5,
        out_channels: int = 1,
        channels: Sequence[int] = (16, 32, 64, 128),
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.2}),
        norm: str | tuple = "instance",
        spectral: bool = True,
        upsample_mode: str = "linear",
        output_act: str | None = "tanh",
        downsample: str = "maxpool",
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2 or any(c <= 0 for c in channels):
            raise ValueError(f"channels needs at least two positive widths, got {channels}")
        if in_channels <= 0 or out_channels <= 0:
            raise ValueError("in_channels and out_channels must be positive")
        self.spatial_dims = spatial_dims
        self.channels = channels

        def conv(cin: int, cout: int) -> SNConvolution:
            return SNConvolution(spatial_dims, cin, cout, kernel_size=3, act=act, norm=norm, spectral=spectral)

        self.input_block = nn.Sequential(conv(in_channels, channels[0]), conv(channels[0], channels[0]))
        if downsample == "maxpool":
            pool = Pool[Pool.MAX, spatial_dims]
            self.down_blocks = nn.ModuleList(
                nn.Sequential(pool(kernel_size=2, stride=2), conv(channels[i - 1], channels[i]), conv(channels[i], channels[i]))
                for i in range(1, len(channels))
            )
        elif downsample == "conv":
            self.down_blocks = nn.ModuleList(
                nn.Sequential(
                    SNConvolution(spatial_dims, channels[i - 1], channels[i], strides=2, kernel_size=3, act=act,
                                  norm=norm, spectral=spectral),
                    conv(channels[i], channels[i]),
                )
                for i in range(1, len(channels))
            )
        else:
            raise ValueError(f"downsample must be 'maxpool' or 'conv', got {downsample!r}")
        self.up_samplers = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(len(channels) - 1, 0, -1):
            half = channels[i] // 2
            self.up_samplers.append(
                UpsampleConv(spatial_dims, channels[i], half, mode=upsample_mode, act=act, norm=norm, spectral=spectral)
            )
            self.up_blocks.append(nn.Sequential(conv(half + channels[i - 1], channels[i - 1]), conv(channels[i - 1], channels[i - 1])))
        out_conv = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1)
        if spectral:
            apply_spectral_norm(out_conv)
        self.output_block = nn.Sequential(out_conv, Act[output_act]() if output_act else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}-d tensor (B, C, spatial...), got shape {tuple(x.shape)}")
        x = self.input_block(x)
        skips = [x]
        for down in self.down_blocks:
            x = down(x)
            skips.append(x)
        skips.pop()
        for up, block in zip(self.up_samplers, self.up_blocks):
            skip = skips.pop()
            x = block(torch.cat([up(x, size=skip.shape[2:]), skip], dim=1))
        return self.output_block(x)


def cycle_generator(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 1,
                    channels: Sequence[int] = (32, 64, 256, 256), act: str | tuple = ("leakyrelu", {"negative_slope": 0.2}),
                    norm: str | tuple = "instance") -> SNUNetGenerator:
    """Generator of the cycle/shape GAN (P2 Table 1): stride-2 3^d convs down (3 levels, max rate 8), two convs per
    resolution, long skips, nearest up-sampling x2 + 3^d conv (stride 1: the table's stride 2 cannot restore the
    resolution), instance norm, tanh.

    Deviations, documented: a full-resolution input block (``channels[0]``, 32) gives the last skip, and the
    decoder halves the channels before each concatenation like MM-GAN's; Table 1's encoder widths
    (64, 256, 256) are kept. LeakyReLU 0.2 (Table 1) rather than the text's ReLU.
    """
    return SNUNetGenerator(spatial_dims, in_channels, out_channels, channels, act=act, norm=norm, spectral=False,
                           upsample_mode="nearest", output_act="tanh", downsample="conv")
