"""Losses of the five methods; weights are constructor arguments."""

from volgan.losses.adversarial import BCEGANLoss, L1SoftmaxLoss, LSGANLoss
from volgan.losses.cycle import CycleConsistencyLoss, ShapeConsistencyLoss
from volgan.losses.wgan import GradientPenalty, WassersteinLoss

__all__ = ["LSGANLoss", "BCEGANLoss", "L1SoftmaxLoss", "CycleConsistencyLoss", "ShapeConsistencyLoss", "GradientPenalty",
           "WassersteinLoss"]
