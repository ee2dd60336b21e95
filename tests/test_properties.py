"""Property-based tests (hypothesis) over shapes, spacings and label sets: the validators accept valid data and
reject mismatched shapes/affines, NaN/Inf and label values outside the set, each with one error naming the file;
the slice-wise machinery (SliceDataset + restack, SlicewiseInferer, predict_slicewise) round-trips volumes exactly."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from monai.data import MetaTensor

from volgan.data import check_image, check_label, check_pair, load_volume, validate_datalist
from volgan.data.slices import SliceDataset, restack, select_slices
from volgan.inferers import predict_slicewise
from volgan.errors import VolganDataError
from volgan.inferers import SlicewiseInferer

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FILES = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])

shapes3 = st.tuples(*[st.integers(2, 10)] * 3)
shapes = st.one_of(st.tuples(*[st.integers(2, 12)] * 2), shapes3)
spacings = st.tuples(*[st.floats(0.25, 5.0).map(lambda x: round(x, 3))] * 3)
origins = st.tuples(*[st.floats(-100.0, 100.0).map(lambda x: round(x, 2))] * 3)
flips = st.tuples(*[st.sampled_from([1.0, -1.0])] * 3)
label_sets = st.sets(st.integers(1, 20), min_size=1, max_size=5).map(lambda s: sorted(s | {0}))


def _affine(spacing, origin, flip=(1.0, 1.0, 1.0)) -> np.ndarray:
    aff = np.diag([*(s * f for s, f in zip(spacing, flip)), 1.0])
    aff[:3, 3] = origin
    return aff


def _labels(rng: np.random.RandomState, shape, values) -> np.ndarray:
    """A label map with values from ``values`` and at least one foreground voxel."""
    lab = rng.choice(values, size=shape)
    lab.flat[0] = values[-1]
    return lab


def _one_error(match: str, path: str, fn, *args, **kwargs) -> VolganDataError:
    with pytest.raises(VolganDataError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg
    assert re.search(match, e.value.problem), (e.value.problem, match)
    return e.value


# ---------------------------------------------------------------- images


@FAST
@given(shape=shapes, seed=st.integers(0, 2**16), channel=st.booleans(), dtype=st.sampled_from([np.float32, np.float64,
                                                                                                 np.int16]))
def test_check_image_accepts_finite_volumes(shape, seed, channel, dtype):
    img = (np.random.RandomState(seed).standard_normal(shape) * 100).astype(dtype)
    if channel:  # a trailing singleton channel (as some NIfTI writers store 3D data)
        img = img[..., None]
    check_image(img, "img.nii.gz", spatial_dims=len(shape))
    check_image(torch.as_tensor(img), "img.nii.gz", spatial_dims=len(shape))


@FAST
@given(shape=shapes, seed=st.integers(0, 2**16), n_nan=st.integers(0, 3), n_pinf=st.integers(0, 2),
       n_ninf=st.integers(0, 2))
def test_check_image_counts_nan_and_inf(shape, seed, n_nan, n_pinf, n_ninf):
    assume(n_nan + n_pinf + n_ninf > 0 and n_nan + n_pinf + n_ninf <= int(np.prod(shape)))
    rng = np.random.RandomState(seed)
    img = rng.standard_normal(shape).astype(np.float32)
    where = rng.choice(img.size, n_nan + n_pinf + n_ninf, replace=False)
    img.flat[where[:n_nan]] = np.nan
    img.flat[where[n_nan:n_nan + n_pinf]] = np.inf
    img.flat[where[n_nan + n_pinf:]] = -np.inf
    _one_error(rf"^contains {n_nan} NaN and {n_pinf + n_ninf} Inf voxels$", "bad.nii.gz", check_image, img,
               "bad.nii.gz", spatial_dims=len(shape))


@FAST
@given(shape=shapes3, extra=st.integers(2, 5))
def test_check_image_rejects_wrong_dimensions(shape, extra):
    _one_error(r"expected a 2D image with one channel, got 3D shape", "v.nii.gz", check_image,
               np.zeros((*shape[:2], extra), np.float32), "v.nii.gz", spatial_dims=2)
    _one_error(r"^expected a 3D volume, got 2D shape", "v.nii.gz", check_image, np.zeros(shape[:2], np.float32),
               "v.nii.gz", spatial_dims=3)
    _one_error(r"^expected a 3D volume with one channel, got 4D shape", "v.nii.gz", check_image,
               np.zeros((*shape, extra), np.float32), "v.nii.gz", spatial_dims=3)
    check_image(np.zeros((*shape, extra), np.float32), "v.nii.gz", spatial_dims=3, channels=extra)  # multi-modal


# ---------------------------------------------------------------- label maps


@FAST
@given(shape=shapes, values=label_sets, seed=st.integers(0, 2**16),
       dtype=st.sampled_from([np.uint8, np.int16, np.int64, np.float32]))
def test_check_label_accepts_values_in_the_set(shape, values, seed, dtype):
    lab = _labels(np.random.RandomState(seed), shape, values).astype(dtype)
    check_label(lab, "lab.nii.gz", values, spatial_dims=len(shape))
    check_label(lab, "lab.nii.gz", None, spatial_dims=len(shape))


@FAST
@given(shape=shapes, values=label_sets, seed=st.integers(0, 2**16),
       outside=st.sets(st.integers(-5, 60), min_size=1, max_size=3), dtype=st.sampled_from([np.int16, np.float32]))
def test_check_label_rejects_values_outside_the_set(shape, values, seed, outside, dtype):
    outside = sorted(outside - set(values))
    assume(outside and len(outside) < int(np.prod(shape)))
    lab = _labels(np.random.RandomState(seed), shape, values)
    lab.flat[1:1 + len(outside)] = outside
    _one_error(rf"^label values {re.escape(str(outside))} not in the configured set {re.escape(str(values))}$",
               "lab.nii.gz", check_label, lab.astype(dtype), "lab.nii.gz", values, spatial_dims=len(shape))


@FAST
@given(shape=shapes, values=label_sets)
def test_check_label_rejects_empty_and_non_integer_maps(shape, values):
    _one_error(r"^empty label map", "lab.nii.gz", check_label, np.zeros(shape, np.uint8), "lab.nii.gz", values,
               spatial_dims=len(shape))
    check_label(np.zeros(shape, np.uint8), "lab.nii.gz", values, spatial_dims=len(shape), require_foreground=False)
    frac = np.full(shape, 0.5, np.float32)
    _one_error(r"^label map has non-integer values", "lab.nii.gz", check_label, frac, "lab.nii.gz", None,
               spatial_dims=len(shape))


# ---------------------------------------------------------------- pairs: shapes and affines


@FAST
@given(shape=shapes3, spacing=spacings, origin=origins, flip=flips)
def test_check_pair_accepts_same_geometry(shape, spacing, origin, flip):
    aff = torch.as_tensor(_affine(spacing, origin, flip))
    img = MetaTensor(torch.zeros(shape), affine=aff, meta={"filename_or_obj": "img.nii.gz"})
    lab = MetaTensor(torch.zeros(shape), affine=aff.clone(), meta={"filename_or_obj": "lab.nii.gz"})
    check_pair(img, lab)
    nudged = aff.clone()
    nudged[0, 3] += 1e-4  # below the 1e-3 mm tolerance
    check_pair(img, MetaTensor(torch.zeros(shape), affine=nudged))
    # channel-first (after LoadImaged with ensure_channel_first)
    check_pair(img[None], lab[None], channel_first=True)


@FAST
@given(shape=shapes3, spacing=spacings, origin=origins, axis=st.integers(0, 2), grow=st.integers(1, 4))
def test_check_pair_rejects_shape_mismatch(shape, spacing, origin, axis, grow):
    aff = torch.as_tensor(_affine(spacing, origin))
    other = tuple(s + grow if a == axis else s for a, s in enumerate(shape))
    img = MetaTensor(torch.zeros(shape), affine=aff, meta={"filename_or_obj": "img.nii.gz"})
    lab = MetaTensor(torch.zeros(other), affine=aff, meta={"filename_or_obj": "lab.nii.gz"})
    _one_error(rf"^shape {re.escape(str(other))} does not match image img.nii.gz shape {re.escape(str(shape))}$",
               "lab.nii.gz", check_pair, img, lab)


@FAST
@given(shape=shapes3, spacing=spacings, origin=origins, row=st.integers(0, 2), col=st.integers(0, 3),
       delta=st.floats(0.01, 10.0), sign=st.sampled_from([1.0, -1.0]))
def test_check_pair_rejects_affine_mismatch(shape, spacing, origin, row, col, delta, sign):
    aff = torch.as_tensor(_affine(spacing, origin))
    moved = aff.clone()
    moved[row, col] += sign * delta
    img = MetaTensor(torch.zeros(shape), affine=aff, meta={"filename_or_obj": "img.nii.gz"})
    lab = MetaTensor(torch.zeros(shape), affine=moved, meta={"filename_or_obj": "lab.nii.gz"})
    err = _one_error(r"^affine differs from image img.nii.gz \(max diff ", "lab.nii.gz", check_pair, img, lab)
    assert float(re.search(r"max diff ([0-9.e+-]+)\)", err.problem).group(1)) == pytest.approx(delta, rel=1e-3)


@FILES
@given(shape=shapes3, spacing=spacings, origin=origins, values=label_sets, seed=st.integers(0, 2**16),
       axis=st.integers(0, 2))
def test_files_validate_and_keep_their_geometry(shape, spacing, origin, values, seed, axis):
    """Written with any spacing/origin, a pair validates and loads with its affine; a label written with another
    spacing, or a NaN voxel in the image, gives one error naming that file."""
    rng = np.random.RandomState(seed)
    aff = _affine(spacing, origin)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        img = rng.standard_normal(shape).astype(np.float32)
        lab = _labels(rng, shape, values).astype(np.int16)
        ip, lp = d / "c_image.nii.gz", d / "c_label.nii.gz"
        nib.save(nib.Nifti1Image(img, aff), str(ip))
        nib.save(nib.Nifti1Image(lab, aff), str(lp))
        assert validate_datalist([{"image": str(ip), "label": str(lp)}], label_values=values) == [
            {"image": str(ip), "label": str(lp)}]
        loaded = load_volume(ip)
        np.testing.assert_allclose(loaded.affine.numpy(), aff, rtol=1e-6, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(loaded), img)
        other = np.array(aff)
        other[axis, axis] *= 1.5
        nib.save(nib.Nifti1Image(lab, other), str(lp))
        _one_error(r"^affine differs from image ", str(lp), validate_datalist, [{"image": str(ip), "label": str(lp)}],
                   label_values=values)
        nib.save(nib.Nifti1Image(lab, aff), str(lp))
        img.flat[rng.randint(img.size)] = np.nan
        nib.save(nib.Nifti1Image(img, aff), str(ip))
        _one_error(r"^contains 1 NaN and 0 Inf voxels$", str(ip), validate_datalist,
                   [{"image": str(ip), "label": str(lp)}], label_values=values)


# ---------------------------------------------------------------- slices


@FAST
@given(shape=shapes3, seed=st.integers(0, 2**16), axis=st.integers(0, 2), frac=st.sampled_from([0.0, 0.5, 1.0, 3.0]))
def test_select_slices_keeps_every_foreground_slice(shape, seed, axis, frac):
    rng = np.random.RandomState(seed)
    lab = (rng.rand(*shape) > 0.9).astype(np.uint8)
    other = tuple(a for a in range(3) if a != axis)
    fg = set(np.flatnonzero(lab.any(axis=other)).tolist())
    chosen = select_slices(lab, axis, frac, np.random.RandomState(seed))
    assert chosen == sorted(set(chosen)) and fg <= set(chosen)
    assert len(chosen) == len(fg) + min(shape[axis] - len(fg), int(round(len(fg) * frac)))
    assert select_slices(lab, axis, float("inf")) == list(range(shape[axis]))


@FILES
@given(shape=shapes3, spacing=spacings, origin=origins, values=label_sets, seed=st.integers(0, 2**16),
       axis=st.integers(0, 2))
def test_slice_dataset_then_restack_is_exact(shape, spacing, origin, values, seed, axis):
    """Every slice along ``axis`` (no resizing, intensities already spanning [-1, 1]) restacks to the volume read
    from the file: the same label map and image, bit for bit; written back with the file's affine, the volume
    reads back with the same array and affine."""
    rng = np.random.RandomState(seed)
    aff = _affine(spacing, origin)
    img = (rng.randint(-8, 9, size=shape) / 8.0).astype(np.float32)  # exact in float32 through the [-1, 1] scaling
    img.flat[0], img.flat[-1] = -1.0, 1.0
    lab = _labels(rng, shape, values).astype(np.int16)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        ip, lp = d / "c_image.nii.gz", d / "c_label.nii.gz"
        nib.save(nib.Nifti1Image(img, aff), str(ip))
        nib.save(nib.Nifti1Image(lab, aff), str(lp))
        ds = SliceDataset([{"image": str(ip), "label": str(lp)}], axis=axis, size=None, empty_fraction=float("inf"),
                          percentiles=(0.0, 100.0), label_values=values)
        assert len(ds) == shape[axis] and [s["slice"] for s in ds.slices] == list(range(shape[axis]))
        lab_back = restack([s["label"] for s in ds.slices], shape, axis)[0]
        img_back = restack([s["image"] for s in ds.slices], shape, axis, mode="bicubic")[0]
        assert torch.equal(lab_back, torch.as_tensor(lab).long())
        assert torch.equal(img_back, torch.as_tensor(img))
        src = load_volume(lp)
        out = d / "restacked_label.nii.gz"
        nib.save(nib.Nifti1Image(lab_back.numpy().astype(np.int16), src.affine.numpy()), str(out))
        back = load_volume(out)
        assert torch.equal(back.affine, src.affine) and np.array_equal(np.asarray(back), lab)
        check_pair(load_volume(ip), back, str(ip), str(out))
        # only the foreground slices: restacked with their indices, the rest filled with background
        fg_only = SliceDataset([{"image": str(ip), "label": str(lp)}], axis=axis, size=None, empty_fraction=0.0,
                               percentiles=(0.0, 100.0))
        idx = [s["slice"] for s in fg_only.slices]
        part = restack([s["label"] for s in fg_only.slices], shape, axis, indices=idx)[0]
        assert torch.equal(part, torch.as_tensor(lab).long())  # empty slices are all background anyway


@FAST
@given(shape=shapes3, spacing=spacings, origin=origins, flip=flips, axis=st.integers(0, 2),
       batch=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_slicewise_inferer_keeps_array_and_affine(shape, spacing, origin, flip, axis, batch, seed):
    """A 2D network run slice by slice over a MetaTensor volume (no resizing) returns the volume's geometry: an
    identity network gives back the same array and affine, whatever the slicing axis and batch size."""
    aff = torch.as_tensor(_affine(spacing, origin, flip))
    vol = MetaTensor(torch.as_tensor(np.random.RandomState(seed).standard_normal((1, 1, *shape)), dtype=torch.float32),
                     affine=aff)
    out = SlicewiseInferer(size=None, axis=axis, batch_size=batch)(vol, torch.nn.Identity())
    assert isinstance(out, MetaTensor) and torch.equal(out.as_tensor(), vol.as_tensor())
    assert torch.equal(out.affine, vol.affine)


class _OneHot(torch.nn.Module):
    """An oracle 2D segmentor: logits are the one-hot of the (integer) input."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0].round().long(), self.k).permute(0, 3, 1, 2).float()


@FAST
@given(shape=shapes3, values=label_sets, axis=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_predict_slicewise_roundtrips_a_label_map(shape, values, axis, seed):
    lab = torch.as_tensor(_labels(np.random.RandomState(seed), shape, values))
    pred = predict_slicewise(_OneHot(max(values) + 1), lab[None].float(), axis=axis, size=None, batch_size=3)
    assert pred.shape == shape and torch.equal(pred, lab.long())
