"""Synthesis: the API (``synthesize``, ``synthesize_augmentations``), the generator input, the all-or-nothing writer
with provenance, quality scores and a contact sheet (sharded under torchrun), and offline 2D GAN slices."""

from volgan.synthesis.api import synthesize, synthesize_augmentations
from volgan.synthesis.preprocessing import perturbation_suffix, synthesis_preprocessing
from volgan.synthesis.slices import OfflineGanSlices, synthesize_slices
from volgan.synthesis.contact_sheet import contact_sheet
from volgan.synthesis.label_to_image import LabelGaussianModel, gaussian_label_pairs
from volgan.synthesis.writer import SynthesisWriter, run_synthesis, shard_inputs, write_nifti

__all__ = ["synthesize", "synthesize_augmentations", "perturbation_suffix", "synthesis_preprocessing",
           "OfflineGanSlices", "synthesize_slices", "SynthesisWriter", "run_synthesis", "shard_inputs", "write_nifti",
           "contact_sheet", "LabelGaussianModel", "gaussian_label_pairs"]
