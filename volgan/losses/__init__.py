"""Losses of the five methods; weights are constructor arguments."""

from volgan.losses.adversarial import LSGANLoss

__all__ = ["LSGANLoss"]
