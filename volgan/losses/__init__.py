"""Losses of the five methods; weights are constructor arguments."""

from volgan.losses.adversarial import BCEGANLoss, L1SoftmaxLoss, LSGANLoss
from volgan.losses.cycle import CycleConsistencyLoss, SegmentationCELoss, ShapeConsistencyLoss
from volgan.losses.wgan import GradientPenalty, WassersteinLoss

__all__ = ["LSGANLoss", "BCEGANLoss", "L1SoftmaxLoss", "CycleConsistencyLoss", "ShapeConsistencyLoss", "SegmentationCELoss", "GradientPenalty",
           "WassersteinLoss"]
