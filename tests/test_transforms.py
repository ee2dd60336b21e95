import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import tiny_case
from volgan.data import BrainAsLabeld, ForegroundNormalized, RandLesionPerturbd, ToPseudoIntensityd, perturb_lesion
from volgan.errors import VolganDataError


def test_perturb_lesion_stays_in_organ_and_is_seeded():
    _, lab = tiny_case(np.random.RandomState(1), (24, 24, 24))
    out, params = perturb_lesion(lab, np.random.RandomState(5))
    assert params["perturbed"]
    assert set(np.unique(out)) <= {0, 1, 2, 3, 4}
    assert np.array_equal(out > 0, lab > 0)  # organ unchanged; lesion only inside it
    assert not np.array_equal(out, lab)
    again, _ = perturb_lesion(lab, np.random.RandomState(5))
    assert np.array_equal(out, again)
    no_lesion = np.where(lab > 0, 3, 0)
    same, p = perturb_lesion(no_lesion, np.random.RandomState(0))
    assert not p["perturbed"] and np.array_equal(same, no_lesion)


def test_tumour_perturbd_dict_and_provenance():
    _, lab = tiny_case(np.random.RandomState(2), (20, 20, 20))
    t = RandLesionPerturbd(keys="label", prob=1.0)
    t.set_random_state(seed=3)
    d = t({"label": torch.as_tensor(lab[None])})
    assert d["label"].shape == (1, 20, 20, 20)
    assert d["label_perturbation"]["perturbed"]


def test_foreground_normalized_range_and_background():
    img, lab = tiny_case(np.random.RandomState(0), (16, 16, 16))
    d = ForegroundNormalized(keys="image", label_key="label")({"image": img[None], "label": lab[None]})
    x = np.asarray(d["image"])
    assert x.min() >= -1 and x.max() <= 1
    assert np.all(x[0][lab == 0] == -1)
    z = ForegroundNormalized(keys="image", label_key=None, scale=False)({"image": img[None]})["image"][0]
    assert abs(float(z[img > 0].mean())) < 1e-4 and abs(float(z[img > 0].std()) - 1) < 1e-3
    with pytest.raises(VolganDataError, match="no foreground"):
        ForegroundNormalized()({"image": img[None], "label": np.zeros_like(lab)[None]})


def test_pseudo_intensity_inverts_normalisation():
    rng = np.random.RandomState(0)
    _, lab = tiny_case(rng, (16, 16, 16))
    img = np.where(lab > 0, 500 + 50 * np.clip(rng.standard_normal(lab.shape), -2.5, 2.5), 0)  # no 3-sigma clipping
    norm = ForegroundNormalized(keys="image", label_key="label", z_range=3.0)({"image": img[None], "label": lab[None]})
    onehot = torch.nn.functional.one_hot(torch.as_tensor(lab).long(), 5).permute(3, 0, 1, 2).float()
    back = ToPseudoIntensityd(keys="pred", cond_key="image")({"pred": torch.as_tensor(norm["image"]), "image": onehot})
    b = back["pred"][0].numpy()
    assert np.all(b[lab == 0] == 0) and b[lab > 0].min() > 0
    renorm = ForegroundNormalized(keys="image", label_key=None, z_range=3.0)({"image": b[None]})["image"]
    np.testing.assert_allclose(renorm[0][lab > 0], np.asarray(norm["image"])[0][lab > 0], atol=1e-4)


def test_brain_as_label():
    img = np.zeros((1, 8, 8, 8), np.float32)
    img[0, 2:6, 2:6, 2:6] = 1
    lab = np.zeros((1, 8, 8, 8), np.int64)
    lab[0, 3, 3, 3] = 4
    out = BrainAsLabeld(keys="label", image_key="image")({"image": img, "label": lab})["label"]
    assert out[0, 3, 3, 3] == 4 and out[0, 2, 2, 2] == 3 and out[0, 0, 0, 0] == 0
    with pytest.raises(VolganDataError, match="reserved"):
        BrainAsLabeld()({"image": img, "label": out})


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(*[st.integers(6, 14)] * 3), seed=st.integers(0, 10_000),
       labels=st.sets(st.sampled_from([1, 2, 4]), min_size=1))
def test_perturbation_properties(shape, seed, labels):
    rng = np.random.RandomState(seed)
    lab = np.where(rng.rand(*shape) < 0.9, 3, 0)
    lesion = rng.rand(*shape) < 0.2
    lab[lesion & (lab > 0)] = rng.choice(sorted(labels), size=int((lesion & (lab > 0)).sum()))
    out, _ = perturb_lesion(lab, np.random.RandomState(seed), margin=2)
    assert out.shape == lab.shape
    assert np.array_equal(out > 0, lab > 0)
    assert set(np.unique(out)) <= {0, 3} | set(labels)
