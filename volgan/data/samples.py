"""The embedded sample data: real T1 brains shipped with volgan, with simulated tumours placed in them.

``volgan/data/sample/`` holds three real skull-stripped T1 MRIs at 3 mm with their brain masks (sources and
licences in ``volgan/data/sample/NOTICE``; built by ``tools/make_sample_data.py``). They have no tumours,
so ``make_sample_cases`` places **simulated** lesions in this real anatomy, with BraTS labels
(1 necrosis, 2 oedema, 4 enhancing; 3 = rest of the brain, 0 background) and lesion intensities
(T1-weighted post-contrast-like: dark necrotic core, bright enhancing rim, slightly dark oedema).
Anatomy is real; the lesions are not. Every case is reproducible from its seed.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_multiotsu

from volgan.data.datalist import write_datalist

__all__ = ["SAMPLE_DIR", "SUBJECTS", "TISSUE_LABELS", "load_subject", "add_synthetic_lesion", "tissue_classes",
           "make_sample_cases"]

SAMPLE_DIR = Path(__file__).resolve().parent / "sample"
SUBJECTS = ("robex", "mni152", "colin27")


def load_subject(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 image float32, brain mask bool, affine) of one embedded subject."""
    if name not in SUBJECTS:
        raise ValueError(f"unknown sample subject {name!r}; choose from {SUBJECTS}")
    img = nib.load(str(SAMPLE_DIR / f"{name}_t1.nii.gz"))
    mask = nib.load(str(SAMPLE_DIR / f"{name}_brainmask.nii.gz"))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(mask.dataobj) > 0, img.affine


def add_synthetic_lesion(
    image: np.ndarray, brain: np.ndarray, rng: np.random.RandomState, radius: tuple[float, float] = (6.0, 10.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Place one simulated tumour in real anatomy; returns (image, BraTS-style label map).

    An irregular ellipsoid (random axes, smooth random boundary) inside the brain: oedema (2) outside,
    an enhancing rim (4) and a necrotic core (1). Intensities are set relative to the brain's median.
    """
    dist = ndimage.distance_transform_edt(brain)
    r = rng.uniform(*radius)
    candidates = np.argwhere(dist > min(r * 0.8, dist.max() - 1))
    centre = candidates[rng.randint(len(candidates))].astype(float)
    axes = r * rng.uniform(0.75, 1.25, size=3)
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=float) for n in image.shape], indexing="ij"))
    d = np.sqrt(sum(((grid[i] - centre[i]) / axes[i]) ** 2 for i in range(3)))
    wobble = ndimage.gaussian_filter(rng.standard_normal(image.shape), 3.0)
    d = d + 0.25 * wobble / max(np.abs(wobble).max(), 1e-6)
    core, rim = rng.uniform(0.3, 0.45), rng.uniform(0.55, 0.7)
    label = np.where(brain, 3, 0).astype(np.uint8)
    label[(d < 1.0) & brain] = 2
    label[(d < rim) & brain] = 4
    label[(d < core) & brain] = 1
    med = float(np.median(image[brain]))
    noise = ndimage.gaussian_filter(rng.standard_normal(image.shape), 0.7) * 0.08 * med
    target = image.copy()
    target[label == 2] = image[label == 2] * 0.65
    target[label == 4] = 1.35 * med + noise[label == 4]
    target[label == 1] = 0.35 * med + noise[label == 1]
    w = ndimage.gaussian_filter((label != 3).astype(float) * brain, 0.6) * brain
    w[label != 3] = 1.0
    out = np.where(brain, (1 - w) * image + w * target, 0.0).astype(np.float32)
    return np.clip(out, 0, None), label


#: the richer MM-GAN condition of issue #20 item 5: the rest of the brain (label 3) split into tissue classes
TISSUE_LABELS = {5: "CSF", 6: "grey matter", 7: "white matter"}


def tissue_classes(image: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """CSF / grey matter / white matter inside ``brain`` from a T1 image: two multi-Otsu thresholds of the brain's
    intensities (T1: CSF darkest, white matter brightest), as a 0 (outside) / 5 / 6 / 7 map (``TISSUE_LABELS``).
    A classical intensity segmentation (the idea of FSL FAST without its bias and MRF terms), so every subject
    gets tissue classes the same way, whatever atlases it comes with."""
    vals = image[brain]
    if vals.size < 3 or np.ptp(vals) == 0:
        raise ValueError("tissue classes need a brain mask with varying T1 intensities")
    lo, hi = threshold_multiotsu(vals, classes=3)
    out = np.zeros(image.shape, np.uint8)
    out[brain] = np.where(vals <= lo, 5, np.where(vals <= hi, 6, 7))
    return out


def make_sample_cases(
    out_dir: str | os.PathLike,
    cases_per_subject: int = 4,
    seed: int = 0,
    subjects: tuple[str, ...] = SUBJECTS,
    tissue: bool = False,
) -> Path:
    """Write ``case_<subject>_<k>_image.nii.gz`` / ``_label.nii.gz`` pairs and ``dataset.json``; returns the JSON path.

    Each case: one embedded subject, optionally mirrored left-right, with one simulated tumour
    (``add_synthetic_lesion``). The datalist's entries carry ``subject`` so splits can hold out a subject.
    ``tissue``: the brain outside the tumour is labelled CSF 5 / grey matter 6 / white matter 7
    (``tissue_classes`` of the real T1 before the tumour) instead of 3 (the same images, a richer condition).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    items = []
    for s_i, name in enumerate(subjects):
        image, brain, affine = load_subject(name)
        for k in range(cases_per_subject):
            rng = np.random.RandomState(seed * 1000 + s_i * 100 + k)
            img, br = image, brain
            if rng.rand() < 0.5:
                img, br = img[::-1].copy(), br[::-1].copy()
            tissues = tissue_classes(img, br) if tissue else None
            img, lab = add_synthetic_lesion(img, br, rng)
            if tissues is not None:
                lab = np.where(lab == 3, tissues, lab).astype(np.uint8)
            case = f"case_{name}_{k}"
            ip, lp = out / f"{case}_image.nii.gz", out / f"{case}_label.nii.gz"
            nib.save(nib.Nifti1Image(img, affine), str(ip))
            nib.save(nib.Nifti1Image(lab, affine), str(lp))
            items.append({"image": str(ip), "label": str(lp), "subject": name, "case": case})
    return write_datalist(
        out / "dataset.json", items, name="volgan-sample",
        description="Real T1 brain MRI (3 mm) with SIMULATED tumours; see volgan/data/sample/NOTICE",
        labels={"0": "background", "1": "necrosis", "2": "oedema", "4": "enhancing",
                **({str(k): v for k, v in TISSUE_LABELS.items()} if tissue else {"3": "brain"})},
    )
