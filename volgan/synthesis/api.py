"""``volgan.synthesize``: whole volumes from label maps (or source images) with a trained generator, through the
bundle's ``inference.yaml`` (sliding windows, AMP on CUDA), written as NIfTI + datalist + provenance (P1 Sec. V-D)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from volgan.bundle import run_bundle
from volgan.data.datalist import load_datalist
from volgan.errors import VolganConfigError
from volgan.io import prepare_output_dir

__all__ = ["synthesize", "synthesize_augmentations"]


def synthesize(input: Any, ckpt_path: str | os.PathLike, output_dir: str | os.PathLike,  # noqa: A002
               bundle: str = "mmgan_label2mri_3d", **overrides: Any) -> Path:
    """Synthesise whole volumes from label maps with a trained generator; returns the written ``datalist.json``.

    Runs the bundle's ``inference.yaml`` (sliding window, AMP on CUDA) with ``input`` (a file, folder or
    datalist of label maps), ``ckpt_path`` and ``output_dir``; other bundle ids (``roi_size``, ``overlap``,
    ``perturb``, ``seed``, ``device``, ``overwrite``, ``gen_channels`` ...) pass as keyword arguments.
    Label maps are checked against the bundle's label convention (MM-GAN: 3 = rest of the brain) first; maps
    without the brain label get it as in training with ``brain_mask=FILE_OR_FOLDER`` or ``brain_as_label=True``
    (then ``input`` must be (image, label) pairs: the head mask of each image). Windows are at most the volume's
    size (``roi_size`` is the largest).
    """
    run_bundle(bundle, "inference", input=str(input) if isinstance(input, (str, os.PathLike)) else input,
               ckpt_path=str(ckpt_path), output_dir=str(output_dir), **overrides)
    return Path(output_dir) / "datalist.json"


def synthesize_augmentations(label_maps: Any, ckpt_path: str | os.PathLike, output_dir: str | os.PathLike,
                             copies: int = 1, seed: int = 0, bundle: str = "mmgan_label2mri_3d",
                             **overrides: Any) -> list[dict[str, str]]:
    """MM-GAN's augmentation workflow (Sec. V-D): ``copies`` perturbed versions of every label map (lesion
    deformed inside the organ, perturbation seeds ``seed + 1 .. seed + copies``), each synthesised into an
    image; all pairs land in ``output_dir`` with one ``datalist.json``. Returns the (image, label) entries.
    ``copies = 3`` with ``mix_datalists(real, pairs, 300)`` gives the paper's "300 % F + R".
    """
    if copies < 1:
        raise VolganConfigError(f"copies must be >= 1, got {copies}")
    prepare_output_dir(output_dir, overrides.pop("overwrite", False))
    for k in range(copies):
        synthesize(label_maps, ckpt_path, output_dir, bundle=bundle, perturb=True, seed=int(seed) + 1 + k,
                   overwrite=True, **overrides)
    return load_datalist(Path(output_dir) / "datalist.json")
