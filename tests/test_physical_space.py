"""Physical space (issue #21 item 3): lesion perturbation in millimetres on anisotropic grids, synthesis windows no
larger than the volume, and the 2D bundles' crop around the foreground that keeps small lesions."""

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor

from tests.conftest import BUNDLES
from volgan.data import LesionPerturbd, RandLesionPerturbd, apply_lesion_perturbation, draw_lesion_perturbation
from volgan.synthesis import VolumeSizedInferer, fit_window

SPACING = (0.8, 0.8, 6.5)  # clinical brain MRI: 0.8 mm in-plane, 6.5 mm slices
#: mm: a voxel and a half per axis, plus half a slice (turned out of plane, a 6.5 mm slab reaches in-plane)
TOLERANCE = np.array(SPACING) * 1.5 + max(SPACING) / 2


def _sphere_label(shape=(72, 72, 16), radius_mm=20.0):
    """Organ (3) everywhere but a border, a round lesion (1) of ``radius_mm`` in its centre, on the SPACING grid."""
    idx = np.indices(shape).astype(float)
    centre = (np.array(shape) - 1) / 2.0
    r = np.sqrt(sum(((idx[k] - centre[k]) * SPACING[k]) ** 2 for k in range(3)))
    lab = np.zeros(shape, np.int64)
    lab[1:-1, 1:-1, 1:-1] = 3
    lab[r <= radius_mm] = 1
    return lab


def _extent_mm(mask):
    idx = np.argwhere(mask)
    return (idx.max(0) - idx.min(0) + 1) * np.array(SPACING)


def _params(voxel_mm, angles=(np.pi / 4, 0.0, 0.0), scale=1.0):
    return {"scale": scale, "flips": [False] * 3, "angles_rad": list(angles), "elastic_sigma": 2.0,
            "elastic_magnitude": 0.0, "elastic_seed": 0, "lesion_labels": [1, 2, 4], "fill_label": 3, "margin": 2,
            "voxel_mm": voxel_mm}


def test_rotated_sphere_stays_a_sphere_in_mm_and_did_not_in_voxel_space():
    lab = _sphere_label()
    before = _extent_mm(lab == 1)
    mm = np.diag(SPACING).tolist()
    for angles in ((np.pi / 4, 0, 0), (0, np.pi / 4, 0), (0.3, -0.4, 0.5)):
        out, rep = apply_lesion_perturbation(lab, _params(mm, angles))
        assert rep["perturbed"] and rep["voxel_mm"] == mm
        after = _extent_mm(out == 1)
        assert np.all(np.abs(after - before) <= TOLERANCE), (angles, after, before)
        assert abs(rep["lesion_voxels_after"] / rep["lesion_voxels_before"] - 1) < 0.2
    old, _ = apply_lesion_perturbation(lab, _params(None))  # voxel index space (volgan < 0.3)
    old_extent = _extent_mm(old == 1)
    assert not np.all(np.abs(old_extent - before) <= TOLERANCE)  # the old behaviour fails the same check:
    assert old_extent[2] > 1.5 * before[2]  # the round lesion became a column along the slices
    scaled, _ = apply_lesion_perturbation(lab, _params(mm, (0.3, -0.4, 0.5), scale=1.2))
    assert np.all(np.abs(_extent_mm(scaled == 1) - 1.2 * before) <= TOLERANCE)


def test_random_perturbation_reads_the_affine_and_replays():
    lab = _sphere_label((48, 48, 12), radius_mm=12.0)
    aff = np.diag([*SPACING, 1.0])
    meta = MetaTensor(torch.as_tensor(lab[None]), affine=torch.as_tensor(aff))
    t = RandLesionPerturbd(keys="label", lesion_labels=(1,), elastic_magnitude=1.0)
    t.set_random_state(3)
    d = t({"label": meta})
    params = d["label_perturbation"]
    assert params["voxel_mm"] == np.diag(SPACING).tolist()
    again = LesionPerturbd(keys="label", params=params)({"label": meta})["label"]
    np.testing.assert_array_equal(np.asarray(again), np.asarray(d["label"]))
    plain = draw_lesion_perturbation(np.random.RandomState(0), 3)
    assert plain["voxel_mm"] is None  # arrays without an affine: voxel space, as before
    with pytest.raises(Exception, match="voxel_mm"):
        apply_lesion_perturbation(lab, _params(np.eye(2).tolist()))


class _Recorder(torch.nn.Module):
    """A stand-in generator (any nn.Module runs through MONAI's sliding window) recording the window shapes."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape[2:]))
        return x[:, :1]


def test_synthesis_window_is_at_most_the_volume():
    assert fit_window([96, 96, 96], [256, 256, 25]) == [96, 96, 32]
    assert fit_window([96, 96, 96], [40, 90, 16]) == [48, 96, 16]
    net = _Recorder()
    x = torch.rand(1, 5, 40, 100, 25)
    out = VolumeSizedInferer([96, 96, 96], overlap=0.25, norm_stats="instance")(x, net)
    assert out.shape == (1, 1, 40, 100, 25)
    assert set(net.shapes) == {(48, 96, 32)}  # not 96^3: the 25-slice volume is padded to 32 slices only
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "mmgan_label2mri_3d" / "configs" / "inference.yaml"))
    assert isinstance(parser.get_parsed_content("inferer"), VolumeSizedInferer)  # the bundle's default
