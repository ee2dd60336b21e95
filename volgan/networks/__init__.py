"""Networks of the five methods; 2D and 3D through ``spatial_dims``."""

from volgan.networks.blocks import SNConvolution, UpsampleConv, apply_spectral_norm, conv_modules, has_spectral_norm
from volgan.networks.discriminators import PatchDiscriminator
from volgan.networks.unet_generator import SNUNetGenerator

__all__ = [
    "SNConvolution",
    "UpsampleConv",
    "apply_spectral_norm",
    "conv_modules",
    "has_spectral_norm",
    "PatchDiscriminator",
    "SNUNetGenerator",
]
