"""Networks of the five methods; 2D and 3D through ``spatial_dims``."""

from volgan.networks.adversarial_unet import AdversarialUNetGenerator, BatchRenorm
from volgan.networks.blocks import SNConvolution, UpsampleConv, apply_spectral_norm, conv_modules, has_spectral_norm
from volgan.networks.composite import TranslateThenSegment
from volgan.networks.discriminators import DenseNetCritic, PatchDiscriminator
from volgan.networks.pair_generator import DCGANCritic, PairGenerator, he_init
from volgan.networks.resnet_generator import ResidualBlock, ResnetGenerator
from volgan.networks.segmentors import CENet, PSPNet, RefineNet, SegEncoder, make_segmentor
from volgan.networks.unet_generator import SNUNetGenerator, cycle_generator

__all__ = [
    "SNConvolution",
    "UpsampleConv",
    "apply_spectral_norm",
    "conv_modules",
    "has_spectral_norm",
    "PatchDiscriminator",
    "AdversarialUNetGenerator",
    "BatchRenorm",
    "DenseNetCritic",
    "SNUNetGenerator",
    "cycle_generator",
    "PSPNet",
    "CENet",
    "ResidualBlock",
    "PairGenerator",
    "DCGANCritic",
    "he_init",
    "ResnetGenerator",
    "RefineNet",
    "SegEncoder",
    "make_segmentor",
    "TranslateThenSegment",
]
