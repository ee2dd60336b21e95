"""Trainers (MONAI ``Trainer`` subclasses on one base), one per training scheme, the staged training run every
bundle's ``train#trainer`` is, and their helpers."""

from volgan.engines.base import NonFiniteLossError, VolganTrainer, set_requires_grad
from volgan.engines.conditional_gan import ConditionalGanTrainer
from volgan.engines.cycle_shape import MODES, CycleShapeEvents, CycleShapeTrainer
from volgan.engines.gan_pretrain import GAN_PRETRAIN_MODES, GanPretrainModes
from volgan.engines.image_pool import ImagePool
from volgan.engines.keys import OutputKeys
from volgan.engines.schedules import LinearDecay, LinearDecayLR, linear_decay_scheduler
from volgan.engines.segmentor import KeyedBatch, SegmentorTrainer, ValidationLossEvaluator, image_label_batch
from volgan.engines.stages import Stage, StagedTraining
from volgan.engines.wgan_gp import PairCriticWganGpTrainer, WganGpTrainer

__all__ = [
    "VolganTrainer", "NonFiniteLossError", "set_requires_grad",
    "ConditionalGanTrainer",
    "CycleShapeTrainer", "CycleShapeEvents", "MODES",
    "GanPretrainModes", "GAN_PRETRAIN_MODES",
    "ImagePool",
    "OutputKeys",
    "LinearDecay", "LinearDecayLR", "linear_decay_scheduler",
    "SegmentorTrainer", "ValidationLossEvaluator", "KeyedBatch", "image_label_batch",
    "Stage", "StagedTraining",
    "WganGpTrainer", "PairCriticWganGpTrainer",
]
