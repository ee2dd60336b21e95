"""Trainers (MONAI ``Trainer`` subclasses), one per training scheme, and their helpers."""

from volgan.engines.base import AdversarialTrainerBase, NonFiniteLossError, set_requires_grad
from volgan.engines.conditional_gan import ConditionalGanTrainer
from volgan.engines.cycle_shape import MODES, CycleKeys, CycleShapeEvents, CycleShapeTrainer
from volgan.engines.image_pool import ImagePool
from volgan.engines.keys import GanKeys
from volgan.engines.pairs import SameClassPairs
from volgan.engines.schedules import LinearDecay, linear_decay_scheduler
from volgan.engines.wgan_gp import (
    ConditionalMixedPairsPrepareBatch,
    MixedPairsPrepareBatch,
    PairCriticWganGpTrainer,
    WganGpTrainer,
    ratio_presets,
    to_pair,
)

__all__ = [
    "AdversarialTrainerBase",
    "NonFiniteLossError",
    "set_requires_grad",
    "ConditionalGanTrainer",
    "CycleShapeTrainer",
    "CycleShapeEvents",
    "CycleKeys",
    "MODES",
    "ImagePool",
    "GanKeys",
    "WganGpTrainer",
    "MixedPairsPrepareBatch",
    "PairCriticWganGpTrainer",
    "ConditionalMixedPairsPrepareBatch",
    "SameClassPairs",
    "ratio_presets",
    "to_pair",
    "LinearDecay",
    "linear_decay_scheduler",
]
