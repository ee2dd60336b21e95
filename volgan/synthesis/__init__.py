"""Synthesis: the API (``synthesize``, ``synthesize_augmentations``), the generator input, the all-or-nothing writer
with provenance, quality scores and a contact sheet (sharded under torchrun), and offline 2D GAN slices."""

from volgan.synthesis.api import synthesize, synthesize_augmentations
from volgan.synthesis.preprocessing import (
    VolumeSizedInferer,
    fit_window,
    perturbation_suffix,
    synthesis_inputs,
    synthesis_preprocessing,
)
from volgan.synthesis.slices import (
    OfflineGanSlices,
    OfflineGaussianSlices,
    deformed_slices,
    gaussian_slices,
    synthesize_slices,
)
from volgan.synthesis.contact_sheet import contact_sheet
from volgan.synthesis.label_to_image import LabelGaussianModel, gaussian_label_pairs
from volgan.synthesis.writer import SynthesisWriter, run_synthesis, shard_inputs, write_nifti

__all__ = ["synthesize", "synthesize_augmentations", "perturbation_suffix", "synthesis_inputs",
           "synthesis_preprocessing", "fit_window", "VolumeSizedInferer",
           "OfflineGanSlices", "OfflineGaussianSlices", "deformed_slices", "gaussian_slices",
           "synthesize_slices", "SynthesisWriter", "run_synthesis", "shard_inputs", "write_nifti",
           "contact_sheet", "LabelGaussianModel", "gaussian_label_pairs"]
