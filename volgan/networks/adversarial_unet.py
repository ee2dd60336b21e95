"""Generative adversarial U-Net generator with a noise projection at the bottleneck, and batch renormalisation
(P4 Sec. II-B, Eqs. 6-8, and Sec. II-C "Model Architectures")."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution, ResidualUnit
from monai.networks.layers.factories import Conv, Norm

from volgan.networks.definition import records_definition

__all__ = ["BatchRenorm", "AdversarialUNetGenerator"]


class BatchRenorm(nn.Module):
    """Batch renormalisation (Ioffe 2017, cited by P4 Sec. II-C for the generator), 1D/2D/3D: one module for any
    ``(B, C, *spatial)`` input. PyTorch and MONAI have none; this is volgan's own, registered in MONAI's ``Norm``
    factory as ``"batchrenorm"`` so that MONAI blocks take ``norm="batchrenorm"`` or
    ``norm=("batchrenorm", {"rmax": 3.0, ...})``.

    Training: ``y = gamma * ((x - mu_B) / sigma_B * r + d) + beta`` with ``r = sg(clip(sigma_B / sigma, 1/rmax,
    rmax))`` and ``d = sg(clip((mu_B - mu) / sigma, -dmax, dmax))`` (``sg``: no gradient), ``mu``/``sigma`` the
    running mean and standard deviation (updated with ``momentum``; the running variance is the unbiased one, as in
    ``torch.nn.BatchNorm``). Evaluation: ``y = gamma * (x - mu) / sigma + beta``. With ``rmax = 1, dmax = 0`` the
    training output is batch norm's. The limits can be relaxed gradually as in Ioffe's paper: ``(1, 0)`` for
    ``warmup_steps`` batches, then linearly to ``(rmax, dmax)`` over ``relax_steps`` (both 0: the final limits
    from the start). Statistics are computed in fp32 (also under autocast).

    Args:
        num_features: channels.
        eps: added to the variances.
        momentum: update rate of the running statistics.
        affine: learnable ``gamma``, ``beta``.
        rmax, dmax: final clipping limits of ``r`` (>= 1) and ``d`` (>= 0); Ioffe: 3 and 5.
        warmup_steps, relax_steps: schedule of the limits, in training batches.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True,
                 rmax: float = 3.0, dmax: float = 5.0, warmup_steps: int = 0, relax_steps: int = 0):
        super().__init__()
        if rmax < 1 or dmax < 0:
            raise ValueError(f"need rmax >= 1 and dmax >= 0, got {rmax}, {dmax}")
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        self.rmax, self.dmax = float(rmax), float(dmax)
        self.warmup_steps, self.relax_steps = int(warmup_steps), int(relax_steps)
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine else None
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def limits(self) -> tuple[float, float]:
        """Current ``(rmax, dmax)`` of the schedule."""
        t = int(self.num_batches_tracked) - self.warmup_steps
        if t < 0:
            return 1.0, 0.0
        frac = min(1.0, t / self.relax_steps) if self.relax_steps > 0 else 1.0
        return 1.0 + (self.rmax - 1.0) * frac, self.dmax * frac

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected (B, {self.num_features}, ...) input, got {tuple(x.shape)}")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        xf = x.float()
        if self.training:
            dims = [0, *range(2, x.ndim)]
            n = xf.numel() // self.num_features
            if n < 2:
                raise ValueError(f"batch renormalisation needs more than 1 value per channel, got {tuple(x.shape)}")
            mean, var = xf.mean(dims), xf.var(dims, unbiased=False)
            std = (var + self.eps).sqrt()
            with torch.no_grad():
                rmax, dmax = self.limits()
                running_std = (self.running_var + self.eps).sqrt()
                r = (std / running_std).clamp(1.0 / rmax, rmax)
                d = ((mean - self.running_mean) / running_std).clamp(-dmax, dmax)
                self.running_mean += self.momentum * (mean - self.running_mean)
                self.running_var += self.momentum * (var * n / (n - 1) - self.running_var)
                self.num_batches_tracked += 1
            y = (xf - mean.view(shape)) / std.view(shape) * r.view(shape) + d.view(shape)
        else:
            y = (xf - self.running_mean.view(shape)) / (self.running_var.view(shape) + self.eps).sqrt()
        if self.weight is not None:
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        return y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, rmax={self.rmax}, dmax={self.dmax}"


if "BATCHRENORM" not in Norm.components:
    Norm.add_factory_class("batchrenorm", BatchRenorm, "volgan.networks.BatchRenorm (Ioffe 2017)")


class AdversarialUNetGenerator(nn.Module):
    """The generative adversarial U-Net's generator G(x_j, z) (P4 Sec. II-B, Fig. 1, Sec. II-C).

    Encoder: per level a residual block of ``convs_per_block`` 3^d convs (norm, LeakyReLU 0.01; Eq. 7-8), then a
    stride-2 conv down (LeakyReLU, norm, dropout). At the bottleneck the code of ``x_j`` is concatenated with a
    **linear projection of Gaussian noise** ``g_l(z)`` (Eq. 6) and fused by a residual block. Decoder: per level a
    stride-2 transposed conv up (LeakyReLU, norm, dropout), the encoder's skip concatenated, a residual block.
    Residual blocks that change the width pass features through a 1^d conv (P4: "a 1x1 convolutional layer to
    pass features between blocks"). A 1^d conv and tanh give ``out_channels`` in [-1, 1]. With 4 levels there are
    8 blocks (4 encoder, the bottleneck fusion, 3 decoder), as in P4.

    The noise projection: with ``size`` given, ``z`` is projected to ``noise_channels`` maps of the bottleneck's
    spatial size (a different noise value per position); with ``size=None``, to a ``noise_channels`` vector
    broadcast over the bottleneck (any input size divisible by ``2 ** (len(channels) - 1)``).

    In volgan G makes an image and its mask together (P5's extension to P4, which makes images only): the input
    ``x_j`` and the output are (image in [-1, 1], mask as -1 / 1) pairs; threshold the mask channel at 0.

    Args:
        spatial_dims: 2 (P4) or 3.
        in_channels: channels of ``x_j`` (2: image + mask).
        out_channels: channels of ``x_g`` (2).
        channels: widths of the levels (the last is the bottleneck's).
        latent_dim: size of ``z``.
        noise_channels: channels of the projected noise.
        dropout: dropout of the down/up-sampling layers.
        norm: ``"batchrenorm"`` (P4), ``"batch"``, ``"instance"``, or a MONAI norm tuple.
        convs_per_block: 3^d convs per residual block (P4: 4).
        size: input spatial size, for the spatial noise projection (``None``: broadcast vector).
        act: activation (P4: LeakyReLU 0.01).
    """

    @records_definition
    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 2,
        out_channels: int = 2,
        channels: Sequence[int] = (64, 128, 256, 256),
        latent_dim: int = 100,
        noise_channels: int = 16,
        dropout: float = 0.2,
        norm: str | tuple = "batchrenorm",
        convs_per_block: int = 4,
        size: Sequence[int] | int | None = None,
        act: str | tuple = ("leakyrelu", {"negative_slope": 0.01}),
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels needs at least two positive widths, got {channels}")
        if latent_dim < 1 or noise_channels < 1 or convs_per_block < 1 or not 0 <= dropout < 1:
            raise ValueError("latent_dim, noise_channels and convs_per_block must be >= 1 and dropout in [0, 1)")
        self.spatial_dims, self.in_channels, self.latent_dim = spatial_dims, in_channels, int(latent_dim)
        self.noise_channels, self.factor = int(noise_channels), 2 ** (len(channels) - 1)
        self.size = None if size is None else (tuple(int(s) for s in size) if isinstance(size, Sequence)
                                                else (int(size),) * spatial_dims)
        if self.size is not None:
            if len(self.size) != spatial_dims or any(s % self.factor for s in self.size):
                raise ValueError(f"size {self.size} must have {spatial_dims} entries divisible by {self.factor}")
            self.bottleneck_size = tuple(s // self.factor for s in self.size)
        else:
            self.bottleneck_size = (1,) * spatial_dims

        def block(cin: int, cout: int) -> ResidualUnit:
            return ResidualUnit(spatial_dims, cin, cout, strides=1, kernel_size=3, subunits=convs_per_block,
                                adn_ordering="NA", act=act, norm=norm)

        def resample(cin: int, cout: int, up: bool) -> Convolution:
            return Convolution(spatial_dims, cin, cout, strides=2, kernel_size=3, adn_ordering="AND", act=act,
                               norm=norm, dropout=dropout or None, is_transposed=up)

        self.encoder = nn.ModuleList()
        self.down = nn.ModuleList()
        cin = in_channels
        for i, c in enumerate(channels):
            self.encoder.append(block(cin, c))
            if i < len(channels) - 1:
                self.down.append(resample(c, c, up=False))
            cin = c
        self.noise = nn.Linear(self.latent_dim, self.noise_channels * math.prod(self.bottleneck_size))
        self.bottleneck = block(channels[-1] + self.noise_channels, channels[-1])
        self.up = nn.ModuleList(resample(channels[i + 1], channels[i], up=True) for i in range(len(channels) - 1))
        self.decoder = nn.ModuleList(block(2 * channels[i], channels[i]) for i in range(len(channels) - 1))
        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected (B, {self.in_channels}, {'H, W' if self.spatial_dims == 2 else 'H, W, D'}) "
                             f"input, got {tuple(x.shape)}")
        sp = tuple(x.shape[2:])
        if self.size is not None and sp != self.size:
            raise ValueError(f"this generator was built for {self.size} inputs (spatial noise), got {sp}")
        if any(s % self.factor for s in sp):
            raise ValueError(f"input size {sp} must be divisible by {self.factor}")

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x)
        n = x.shape[0]
        if z is None:
            z = torch.randn(n, self.latent_dim, device=x.device)
        if z.shape != (n, self.latent_dim):
            raise ValueError(f"z must have shape ({n}, {self.latent_dim}), got {tuple(z.shape)}")
        skips = []
        h = x
        for i, enc in enumerate(self.encoder):
            h = enc(h)
            if i < len(self.down):
                skips.append(h)
                h = self.down[i](h)
        noise = self.noise(z.to(device=h.device)).view(n, self.noise_channels, *self.bottleneck_size)
        h = self.bottleneck(torch.cat([h, noise.to(h.dtype).expand(-1, -1, *h.shape[2:])], 1))
        for i in reversed(range(len(self.up))):
            up = self.up[i](h)
            h = self.decoder[i](torch.cat([up, skips[i].to(up.dtype)], 1))
        return torch.tanh(self.head(h))
