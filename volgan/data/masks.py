"""Head / brain masks for MM-GAN's "rest of the brain" label (P1 Sec. V-A: label 3), one rule for training and
synthesis: a user-given mask (``brain_mask``: a file, a folder matched by case name, or a datalist entry's
``brain_mask``), or a head mask computed from the image (``head_mask``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu, threshold_otsu

from volgan.data.datalist import VOLUME_SUFFIXES, case_name, file_stem
from volgan.errors import VolganDataError

__all__ = ["head_mask", "find_brain_mask", "CONSTANT_BACKGROUND_FRACTION", "MASK_TAGS"]

#: a channel whose minimum holds at least this fraction of the voxels has a constant background (skull-stripped or
#: masked scans, e.g. BraTS and volgan's sample data, or a raw scan zero-padded outside its field of view)
CONSTANT_BACKGROUND_FRACTION = 0.05
#: above a constant background, voxels darker than ``AIR_LEVEL`` of the 99th percentile are air; when they are at
#: least ``AIR_FRACTION`` of those voxels the scan is a padded raw one (noisy air inside the field of view), not a
#: skull-stripped one (whose darkest tissue, CSF, is far brighter than air)
AIR_LEVEL = 0.05
AIR_FRACTION = 0.2
#: name endings of mask files in a ``brain_mask`` folder (``<case>_brain_mask.nii.gz``, ``<case>_brainmask...``)
MASK_TAGS = ("_brain_mask", "_brainmask", "_brain", "_mask", "")


def _channel_foreground(x: np.ndarray) -> np.ndarray:
    low = float(x.min())
    values = x
    if float(np.mean(x == low)) >= CONSTANT_BACKGROUND_FRACTION:
        values = x[x > low]
        if values.size == 0:
            return x > low
        top = float(np.percentile(values, 99))
        if float(np.mean(values - low < AIR_LEVEL * (top - low))) < AIR_FRACTION:
            return x > low  # skull-stripped or masked: everything above the background is brain / head
        # zero-padded raw scan: the noisy air inside the field of view is cut below, as in an unpadded one
    try:  # air | dark tissue (skull, CSF) | bright tissue: the lowest of the 3-class Otsu thresholds cuts the air
        return x > threshold_multiotsu(values, classes=3)[0]
    except ValueError:  # too few distinct intensities for three classes
        return x > threshold_otsu(values)


def head_mask(image: Any, channel_first: bool = True) -> np.ndarray:
    """The head (or, for skull-stripped scans, the brain) of an image, as a boolean spatial mask.

    Per channel: the voxels above a constant background when one exists (the minimum holds at least
    ``CONSTANT_BACKGROUND_FRACTION`` of the voxels: skull-stripped/masked scans) and no air is left above it, else
    above the lowest threshold of a 3-class Otsu (air | skull, CSF | brain, scalp: raw scans with noisy air, zero
    padding outside their field of view left out of the fit); the channels are united, the largest
    connected component kept and its holes filled (ventricles, dark CSF, the dark skull, air in the sinuses), in 3D
    and in every slice along each axis (a head cut by the field of view, e.g. 25 thick slices, is open in 3D). A raw scan gives the whole head (skull and scalp included): for the
    brain alone give a brain mask (``brain_mask``) from a skull-stripping tool."""
    arr = np.asarray(image, dtype=np.float32)
    channels = arr if channel_first else arr[None]
    fg = np.zeros(channels.shape[1:], bool)
    for c in channels:
        fg |= _channel_foreground(c)
    lab, n = ndimage.label(fg)
    if n > 1:
        fg = lab == (int(np.argmax(np.bincount(lab.ravel())[1:])) + 1)
    fg = ndimage.binary_fill_holes(fg)
    for axis in range(fg.ndim) if fg.ndim == 3 else ():  # a head cut by the field of view is open in 3D
        for i in range(fg.shape[axis]):
            index = (slice(None),) * axis + (i,)
            fg[index] = ndimage.binary_fill_holes(fg[index])
    return fg


def find_brain_mask(brain_mask: str | os.PathLike, label_path: str | os.PathLike) -> str:
    """The mask file for one label map: ``brain_mask`` itself when it is a file, else the file of the folder
    ``brain_mask`` named ``<case><tag><suffix>`` (``MASK_TAGS``, e.g. ``c1_brain_mask.nii.gz``) for the label map's
    case; a missing folder or mask is a ``VolganDataError`` naming what was looked for."""
    root = Path(brain_mask)
    if root.is_file():
        return str(root)
    if not root.is_dir():
        raise VolganDataError(root, "brain_mask does not exist (give a mask file, or a folder of <case>_brain_mask "
                              "files)")
    case = case_name(label_path)
    by_stem = {file_stem(p): p for p in sorted(root.iterdir()) if any(p.name.lower().endswith(s)
                                                                       for s in VOLUME_SUFFIXES)}
    for tag in MASK_TAGS:
        if f"{case}{tag}" in by_stem:
            return str(by_stem[f"{case}{tag}"])
    raise VolganDataError(root, f"brain_mask folder has no mask for case {case!r} of {label_path} (expected "
                          f"{case}_brain_mask.nii.gz or {case}.nii.gz)")
