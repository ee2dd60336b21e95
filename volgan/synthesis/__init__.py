"""Synthesis: the API (``synthesize``, ``synthesize_augmentations``), the generator input, the all-or-nothing writer
with provenance, and offline 2D GAN slices."""

from volgan.synthesis.api import synthesize, synthesize_augmentations
from volgan.synthesis.preprocessing import perturbation_suffix, synthesis_preprocessing
from volgan.synthesis.slices import OfflineGanSlices, synthesize_slices
from volgan.synthesis.writer import SynthesisWriter, write_nifti

__all__ = ["synthesize", "synthesize_augmentations", "perturbation_suffix", "synthesis_preprocessing",
           "OfflineGanSlices", "synthesize_slices", "SynthesisWriter", "write_nifti"]
