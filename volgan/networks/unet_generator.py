"""MM-GAN generator: spectral-norm U-Net, label map -> image (P1, Sec. IV-A, Fig. 3)."""

from __future__ import annotations

from collections.abc import Sequence

import itertools
from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Conv, Pool

from volgan.errors import VolganConfigError
from volgan.networks.blocks import (SNConvolution, UpsampleConv, apply_spectral_norm, conv_modules, has_spectral_norm,
                                   without_spectral_norm)
from volgan.networks.definition import records_definition

__all__ = ["SNUNetGenerator", "cycle_generator", "running_stats_norm"]


def running_stats_norm(norm: str | tuple) -> str | tuple:
    """A MONAI ``Norm`` spec for instance norm that keeps running statistics (``track_running_stats``), which
    ``eval()`` then uses; other norms are returned unchanged."""
    name, kwargs = (norm, {}) if isinstance(norm, str) else (norm[0], dict(norm[1]) if len(norm) > 1 else {})
    if str(name).lower() != "instance":
        return norm
    return (name, {**kwargs, "track_running_stats": True})


class SNUNetGenerator(nn.Module):
    """U-Net generator of MM-GAN (P1 Sec. IV-A): label map (one-hot) -> image in [-1, 1].

    One input block at full resolution (two 3^d convs to ``channels[0]``), ``len(channels) - 1`` down blocks
    (2^d max-pool stride 2, two convs, channels doubling), as many up blocks (interpolation x2 and a conv that
    halves the channels, concatenation with the skip, two convs) and an output block (1^d conv, tanh).
    Every conv is followed by instance norm and LeakyReLU, and every conv (output conv included) carries
    spectral normalisation. No transposed convolution. Inputs of any size work: they are padded at the end of each
    axis (edge values) to a multiple of the total down-sampling ``2^(levels - 1)`` and the output cropped back, so
    every input pools and up-samples on the same grid (a window of a volume computes what the whole-volume pass
    computes there, issue #19).

    ``norm_stats`` decides where instance norm takes its statistics at inference (``eval()``): ``"instance"``
    (P1 as published) normalises each input by its own mean and variance, so a window of a volume is normalised
    differently from the whole volume and windowed synthesis shows seams; ``"running"`` trains exactly as the
    paper (per-patch statistics, while keeping running averages) and normalises every input at inference by
    those averages, which do not depend on the window (volgan's bundles use this).

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
        norm_stats: ``"instance"`` or ``"running"`` (see above; only for instance norm).

    The P2 generator is this class with ``downsample="conv"``, ``upsample_mode="nearest"``, ``spectral=False``
    and channels (32, 64, 256, 256): see ``volgan.networks.cycle_generator``.
    """

    @records_definition
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
        norm_stats: str = "instance",
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
        self.align = 2 ** (len(channels) - 1)
        self.norm_stats = norm_stats
        norm = running_stats_norm(norm) if norm_stats == "running" else norm
        if norm_stats not in ("instance", "running"):
            raise ValueError(f"norm_stats must be 'instance' or 'running', got {norm_stats!r}")

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
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}-d tensor (B, C, spatial...), got shape {x.shape}")
        size = x.shape[2:]
        padding: List[int] = []  # F.pad lists the last axis first
        for d in range(len(size) - 1, -1, -1):
            padding += [0, (-size[d]) % self.align]
        if sum(padding) == 0:
            return self._forward(x)
        y = self._forward(F.pad(x, padding, mode="replicate"))
        for d in range(len(size)):
            y = y.narrow(d + 2, 0, size[d])
        return y

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script`` (MONAI's ``ckpt_export``) gets a copy with plain weights: spectral-norm
        parametrisations cannot be scripted (``volgan.networks.blocks.without_spectral_norm``)."""
        return without_spectral_norm(self) if any(has_spectral_norm(c) for c in conv_modules(self)) else self

    @torch.no_grad()
    def forward_tiled(self, x: torch.Tensor, tile: int | Sequence[int] = 64, store: torch.device | str | None = None
                      ) -> torch.Tensor:
        """The eval-mode output of ``forward`` over a whole volume, computed block by block in tiles of at most
        ``tile`` output voxels per axis (issue #19): each block of the U-Net (two convs, a down block, an up
        block) runs on a tile plus the halo its convolutions, pooling and interpolation read, cropped to the
        volume (so the volume's own borders are padded exactly as in one pass), and its output tile is written
        into the block's full feature map (on ``store``, default ``x``'s device). Every tile pools on the grid of
        the whole pass, so the result equals one pass up to float rounding: no window borders, no seams; the
        memory a convolution needs is that of one tile, and what is kept between blocks is the skip features
        (``channels[0]`` per voxel at full resolution, where one pass holds several such maps at once).

        Needs normalisation with fixed statistics in eval mode (``norm_stats="running"``): statistics of the
        whole input cannot be known tile by tile.
        """
        if self.training:
            raise VolganConfigError("forward_tiled is inference: call eval() first")
        for m in self.modules():
            if isinstance(m, nn.modules.instancenorm._InstanceNorm) and not m.track_running_stats:
                raise VolganConfigError("tiled synthesis needs normalisation with fixed statistics "
                                        "(norm_stats='running'); a generator with per-input instance norm "
                                        "(norm_stats='instance') is synthesised with blended windows instead")
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(f"expected a {self.spatial_dims + 2}-d tensor (B, C, spatial...), got shape {tuple(x.shape)}")
        tile = [int(tile)] * self.spatial_dims if isinstance(tile, (int, float)) else [int(t) for t in tile]
        if any(t < 1 for t in tile):
            raise VolganConfigError(f"tile must be positive, got {tile}")
        device = x.device
        store = torch.device(store) if store is not None else device
        size = x.shape[2:]
        pad = [(-int(s)) % self.align for s in size]
        if any(pad):
            x = F.pad(x, [p for a in reversed(pad) for p in (0, a)], mode="replicate")
        h = _tiled_same(self.input_block, x, 2, tile, store, device)
        skips = [h]
        for down in self.down_blocks:
            h = _tiled_down(down, h, 2, tile, store, device)
            skips.append(h)
        skips.pop()
        last = len(self.up_blocks) - 1
        for i, (up, block) in enumerate(zip(self.up_samplers, self.up_blocks)):
            def stage(coarse, skip, up=up, block=block, final=(i == last)):
                y = block(torch.cat([up(coarse, size=skip.shape[2:]), skip], dim=1))
                return self.output_block(y) if final else y  # the 1^d output conv is fused with the last block

            h = _tiled_up(stage, h, skips.pop(), 4, tile, store, device)
        return h[(slice(None), slice(None), *(slice(0, int(s)) for s in size))]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
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


def _axis_tiles(n: int, tile: int) -> list[tuple[int, int]]:
    return [(a, min(a + tile, n)) for a in range(0, n, tile)]


def _run_tiles(fn, out_shape, tile, sources, store) -> torch.Tensor:
    """Run ``fn`` over the output tiles of ``out_shape``: ``sources(region)`` gives the inputs of a tile and the
    output position of the first voxel ``fn`` returns for them."""
    out = None
    for region in itertools.product(*(_axis_tiles(int(n), t) for n, t in zip(out_shape, tile))):
        inputs, origin = sources(region)
        y = fn(*inputs)
        if out is None:
            out = torch.empty((y.shape[0], y.shape[1], *(int(n) for n in out_shape)), dtype=y.dtype, device=store)
        out[(slice(None), slice(None), *(slice(a, b) for a, b in region))] = \
            y[(slice(None), slice(None), *(slice(a - o, b - o) for (a, b), o in zip(region, origin)))].to(store)
    return out


def _crop(x: torch.Tensor, box, device: torch.device) -> torch.Tensor:
    return x[(slice(None), slice(None), *(slice(lo, hi) for lo, hi in box))].to(device)


def _tiled_same(fn, x: torch.Tensor, halo: int, tile, store, device) -> torch.Tensor:
    """A block that keeps the grid (stacked 3^d convs): a tile reads ``halo`` more voxels on each side."""
    n = x.shape[2:]

    def sources(region):
        box = [(max(a - halo, 0), min(b + halo, int(m))) for (a, b), m in zip(region, n)]
        return [_crop(x, box, device)], [lo for lo, _ in box]

    return _run_tiles(fn, n, tile, sources, store)


def _tiled_down(fn, x: torch.Tensor, halo: int, tile, store, device) -> torch.Tensor:
    """A block that halves the grid (2^d max-pool or a stride-2 conv, then convs): output voxels [a, b) read
    input voxels [2(a - halo), 2(b + halo)); the even start keeps the pooling grid of the whole pass."""
    n = x.shape[2:]

    def sources(region):
        box = [(max(2 * (a - halo), 0), min(2 * (b + halo), int(m))) for (a, b), m in zip(region, n)]
        return [_crop(x, box, device)], [lo // 2 for lo, _ in box]

    return _run_tiles(fn, [int(m) // 2 for m in n], tile, sources, store)


def _tiled_up(fn, coarse: torch.Tensor, skip: torch.Tensor, halo: int, tile, store, device) -> torch.Tensor:
    """An up block (x2 interpolation of ``coarse``, a conv, concatenation with ``skip``, convs): fine voxels
    [a, b) read coarse voxels [floor((a - halo) / 2), ceil((b + halo) / 2)) and the skip on twice that range,
    so the interpolation of a tile equals that of the whole map where the tile's output is kept."""
    nc, nf = coarse.shape[2:], skip.shape[2:]

    def sources(region):
        cbox = [(max((a - halo) // 2, 0), min(-(-(b + halo) // 2), int(m))) for (a, b), m in zip(region, nc)]
        fbox = [(2 * lo, min(2 * hi, int(m))) for (lo, hi), m in zip(cbox, nf)]
        return [_crop(coarse, cbox, device), _crop(skip, fbox, device)], [lo for lo, _ in fbox]

    return _run_tiles(fn, nf, tile, sources, store)


@records_definition
def cycle_generator(spatial_dims: int = 3, in_channels: int = 1, out_channels: int = 1,
                    channels: Sequence[int] = (32, 64, 256, 256), act: str | tuple = ("leakyrelu", {"negative_slope": 0.2}),
                    norm: str | tuple = "instance", norm_stats: str = "instance") -> SNUNetGenerator:
    """Generator of the cycle/shape GAN (P2 Table 1): stride-2 3^d convs down (3 levels, max rate 8), two convs per
    resolution, long skips, nearest up-sampling x2 + 3^d conv (stride 1: the table's stride 2 cannot restore the
    resolution), instance norm, tanh.

    Deviations, documented: a full-resolution input block (``channels[0]``, 32) gives the last skip, and the
    decoder halves the channels before each concatenation like MM-GAN's; Table 1's encoder widths
    (64, 256, 256) are kept. LeakyReLU 0.2 (Table 1) rather than the text's ReLU.
    """
    return SNUNetGenerator(spatial_dims, in_channels, out_channels, channels, act=act, norm=norm, spectral=False,
                           upsample_mode="nearest", output_act="tanh", downsample="conv", norm_stats=norm_stats)
