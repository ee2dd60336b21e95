"""Build the embedded sample set ``volgan/data/sample/`` from ``../shared/data``.

Run once by a maintainer (the output is committed; users never need this script):

    python tools/make_sample_data.py ../shared/data

Each subject is a real T1-weighted brain MRI from a redistributable package
(see ``volgan/data/sample/NOTICE``): skull-stripped with its own brain mask,
resampled to 3 mm isotropic, cropped to the brain's bounding box (+2 voxels),
stored as int16 (image, 0..1000) and uint8 (brain mask).
"""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_to_output

SPACING = 3.0


def _load(path):
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim == 4:
        data = data[..., 0]
    return nib.Nifti1Image(data, img.affine)


def _subjects(root: Path):
    brain = root / "brain_mri"
    t1 = _load(brain / "robex_single_subject/atlas.nii.gz")
    mask = _load(brain / "robex_single_subject/atlas_mask.nii.gz")
    yield "robex", t1, np.asarray(mask.dataobj) > 0.5
    t1 = _load(brain / "mni152_2009a_nilearn/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = np.asarray(_load(brain / "mni152_2009a_nilearn/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").dataobj)
    wm = np.asarray(_load(brain / "mni152_2009a_nilearn/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").dataobj)
    yield "mni152", t1, (gm + wm) > 127
    t1 = _load(brain / "colin27_mricron/ch2bet.nii.gz")
    yield "colin27", t1, np.asarray(t1.dataobj) > 0


def main(root: str, out: str = "volgan/data/sample") -> None:
    from scipy import ndimage

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, t1, mask in _subjects(Path(root)):
        mask = ndimage.binary_fill_holes(ndimage.binary_opening(mask, iterations=1))
        labels, n = ndimage.label(mask)
        if n > 1:
            sizes = ndimage.sum(mask, labels, range(1, n + 1))
            mask = labels == (int(np.argmax(sizes)) + 1)
        masked = nib.Nifti1Image(np.asarray(t1.dataobj) * mask, t1.affine)
        img_r = resample_to_output(masked, voxel_sizes=SPACING, order=1)
        msk_r = resample_to_output(nib.Nifti1Image(mask.astype(np.float32), t1.affine), voxel_sizes=SPACING, order=1)
        m = np.asarray(msk_r.dataobj) > 0.5
        im = np.asarray(img_r.dataobj) * m
        idx = np.argwhere(m)
        lo = np.maximum(idx.min(0) - 2, 0)
        hi = np.minimum(idx.max(0) + 3, m.shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        im, m = im[sl], m[sl]
        affine = img_r.affine.copy()
        affine[:3, 3] = img_r.affine[:3, :3] @ lo + img_r.affine[:3, 3]
        p99 = np.percentile(im[m], 99.5)
        im = np.clip(im / p99 * 1000.0, 0, 1000).astype(np.int16)
        nib.save(nib.Nifti1Image(im, affine), str(out_dir / f"{name}_t1.nii.gz"))
        nib.save(nib.Nifti1Image(m.astype(np.uint8), affine), str(out_dir / f"{name}_brainmask.nii.gz"))
        print(name, im.shape, int(m.sum()))


if __name__ == "__main__":
    main(*sys.argv[1:])
