"""Losses of the five methods; weights are constructor arguments."""

from volgan.losses.adversarial import LSGANLoss
from volgan.losses.cycle import CycleConsistencyLoss, ShapeConsistencyLoss

__all__ = ["LSGANLoss", "CycleConsistencyLoss", "ShapeConsistencyLoss"]
