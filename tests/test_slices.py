"""Slice extraction and restacking (the 2D pipelines' machinery)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_case, write_pair
from volgan.data.slices import SliceDataset, restack, select_slices
from volgan.inferers import predict_slicewise


@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(*[st.integers(3, 12)] * 3), axis=st.integers(0, 2), seed=st.integers(0, 1000))
def test_slice_then_restack_is_exact(shape, axis, seed):
    vol = torch.as_tensor(np.random.RandomState(seed).randint(0, 5, shape))[None]
    slices = [vol.select(axis + 1, i) for i in range(shape[axis])]
    assert torch.equal(restack(slices, shape, axis), vol)


def test_select_slices_foreground_and_empty_share():
    lab = np.zeros((4, 4, 20), int)
    lab[1, 1, 5:10] = 1
    assert select_slices(lab, 2, 0.0) == [5, 6, 7, 8, 9]
    chosen = select_slices(lab, 2, 0.4, np.random.RandomState(0))
    assert len(chosen) == 7 and set(range(5, 10)) <= set(chosen)
    assert select_slices(lab, 2, float("inf")) == list(range(20))


def test_slice_dataset_resizes_and_roundtrips_geometry(tmp_path):
    img, lab = tiny_case(np.random.RandomState(0), (20, 24, 10))
    item = write_pair(tmp_path, "c", img, lab)
    ds = SliceDataset([item], axis=2, size=(32, 32), empty_fraction=0.0, label_values=[0, 1, 2, 3, 4])
    assert len(ds) == int(np.any(lab > 0, axis=(0, 1)).sum())
    d = ds[0]
    assert d["image"].shape == (1, 32, 32) and d["label"].shape == (1, 32, 32)
    assert float(d["image"].min()) >= -1 and float(d["image"].max()) <= 1
    assert set(torch.unique(d["label"]).tolist()) <= {0, 1, 2, 3, 4}
    same = SliceDataset([item], axis=2, size=None, empty_fraction=float("inf"))
    back = restack([s["label"] for s in same.slices], lab.shape, 2)[0]
    assert torch.equal(back, torch.as_tensor(lab).long())  # no resizing: exact round trip


def test_predict_slicewise_shape():
    class Oracle(torch.nn.Module):
        def forward(self, x):  # 2 classes: foreground where the image is bright
            return torch.cat([-x, x], 1)

    vol = torch.zeros(1, 12, 10, 6)
    vol[0, 3:6, 3:6, 2:4] = 1
    exact = predict_slicewise(Oracle(), vol, axis=2, size=None)
    assert exact.shape == (12, 10, 6) and torch.equal(exact.bool(), vol[0] > 0)
    resized = predict_slicewise(Oracle(), vol, axis=2, size=(16, 16))  # bicubic there, nearest back: close
    assert resized.shape == (12, 10, 6) and bool(resized[vol[0] > 0].all())


def test_slice_dataset_errors(tmp_path):
    img, lab = tiny_case(np.random.RandomState(0), (8, 8, 6))
    item = write_pair(tmp_path, "c", img, np.zeros_like(lab))
    from volgan.errors import VolganDataError

    with pytest.raises(VolganDataError, match="empty label map"):
        SliceDataset([item])
