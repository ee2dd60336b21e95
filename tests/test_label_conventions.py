"""Label conventions that cannot be got wrong silently (issue #21 item 1): every bundle states its label convention in
metadata.json; check-data --bundle, MM-GAN training and synthesis check label maps against it and name the fix; the
brain label comes from a head mask (constant background or Otsu, largest component, holes filled) or a given mask,
with one rule in training and synthesis."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImaged
from scipy import ndimage

from tests.conftest import tiny_case
from volgan.apps.cli import main
from volgan.bundle import bundle_names, run_bundle
from volgan.data import BrainAsLabeld, BrainLabeld, head_mask, label_convention
from volgan.errors import VolganConfigError, VolganDataError
from volgan.io import weights_sidecar
from volgan.networks import SNUNetGenerator
from volgan.synthesis import synthesize

ANISO = np.diag([0.8, 0.8, 6.5, 1.0])  # clinical brain MRI: thin in-plane, thick slices


def _head(shape=(40, 40, 12), seed=0, noisy_air=True):
    """A non-skull-stripped head: brain ellipsoid, a dark skull shell, bright scalp, noisy air (Rician-like);
    returns (image, head, brain)."""
    rng = np.random.RandomState(seed)
    g = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((g ** 2).sum(0))
    brain, skull, head = r < 0.6, (r >= 0.6) & (r < 0.72), r < 0.85
    img = np.where(brain, 600 + 60 * rng.standard_normal(shape), 0) + np.where(skull, 120, 0) \
        + np.where(head & ~brain & ~skull, 900, 0)
    if noisy_air:
        img = np.abs(img + rng.normal(0, 15, shape) + 1j * rng.normal(0, 15, shape))
    return img.astype(np.float32), head, brain


def _tumour_pairs(folder, n=2, shape=(40, 40, 12), values=(0, 1)):
    """(image, {0, 1} tumour label) pairs on an anisotropic grid, as a clinical export: no brain label."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img, head, brain = _head(shape, seed=i)
        lab = np.zeros(shape, np.uint8)
        lab[16:22, 16:22, 5:7] = values[1]
        nib.save(nib.Nifti1Image(img, ANISO), str(folder / f"c{i}_image.nii.gz"))
        nib.save(nib.Nifti1Image(lab, ANISO), str(folder / f"c{i}_label.nii.gz"))
    return folder


def _dice(a, b):
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_every_bundle_states_its_label_convention():
    for name in bundle_names():
        conv = label_convention(name)
        assert conv.labels[0] == "background"
    mm = label_convention("mmgan_label2mri_3d")
    assert mm.required_values() == [3] and mm.labels[3] == "brain" and mm.label_values == (0, 1, 2, 3, 4)
    assert mm.required_values([0, 1, 2]) == []  # a run with its own label set (no 3) requires nothing
    err = mm.problem([0, 1], "x.nii.gz")
    assert err is not None and "\n" not in str(err)
    assert str(err).startswith("x.nii.gz: label map has values {0, 1}: MM-GAN needs a brain label (3")
    assert "--brain_mask" in str(err) and "--brain_as_label" in str(err)
    assert mm.problem([0, 1, 2, 3, 4], "x") is None and mm.problem([0, 1], "x", added=True) is None
    assert "already contains" in str(mm.problem([0, 3], "x", added=True))


def test_head_mask_beats_nonzero_on_a_raw_head_and_keeps_skull_stripped_brains():
    img, head, brain = _head()
    mask = head_mask(img[None])
    assert float((img != 0).mean()) > 0.99  # the old rule: every voxel is "brain"
    assert _dice(mask, head) > 0.97 and mask.mean() < 1.2 * head.mean()
    stripped = np.where(brain, img, 0)  # skull-stripped (BraTS-like): the brain itself, holes filled
    ventricle = ndimage.binary_erosion(brain, iterations=3)
    stripped[ventricle] = 0  # CSF inside at the background value: a hole, filled
    np.testing.assert_array_equal(head_mask(stripped[None]), brain)
    padded = np.pad(img, ((6, 6), (6, 6), (0, 0)))  # a raw scan resampled with zero padding around it (issue #21)
    assert float((padded == 0).mean()) > 0.05  # a constant background: the old rule took all the air as head
    head_p = np.pad(head, ((6, 6), (6, 6), (0, 0)))
    mask_p = head_mask(padded[None])
    assert _dice(mask_p, head_p) > 0.97 and mask_p.mean() < 1.2 * head_p.mean()


def test_brain_labeld_sources_mask_folder_and_reserved_label(tmp_path):
    img, head, brain = _head()
    lab = np.zeros(img.shape, np.uint8)
    lab[18:22, 18:22, 5:7] = 1
    out = BrainAsLabeld()({"image": img[None], "label": lab[None]})["label"][0]
    assert set(np.unique(out)) == {0, 1, 3} and _dice(out > 0, head) > 0.97
    masks = tmp_path / "masks"
    masks.mkdir()
    nib.save(nib.Nifti1Image(brain.astype(np.uint8), ANISO), str(masks / "c0_brain_mask.nii.gz"))
    nib.save(nib.Nifti1Image(lab, ANISO), str(tmp_path / "c0_label.nii.gz"))
    d = LoadImaged(["label"], ensure_channel_first=True, image_only=True)({"label": str(tmp_path / "c0_label.nii.gz")})
    conv = label_convention("mmgan_label2mri_3d")
    got = BrainLabeld(brain_mask=str(masks), convention=conv)(d)["label"][0].numpy()
    np.testing.assert_array_equal(got > 0, brain | (lab > 0))
    with pytest.raises(VolganDataError, match="needs a brain label"):
        BrainLabeld(convention=conv)(d)
    with pytest.raises(VolganDataError, match="no mask for case 'c1'"):
        BrainLabeld(brain_mask=str(masks))({"label": _named(d["label"], "c1_label.nii.gz")})
    with pytest.raises(VolganDataError, match="already contains label 3"):
        BrainAsLabeld()({"image": img[None], "label": np.where(lab > 0, 3, 0)[None]})


def _named(t, name):
    t = t.clone()
    t.meta["filename_or_obj"] = name
    return t


def test_check_data_bundle_names_the_fix(tmp_path, capsys):
    data = _tumour_pairs(tmp_path / "clinical")
    assert main(["check-data", str(data)]) == 0  # generic checks: fine
    capsys.readouterr()
    assert main(["check-data", str(data), "--bundle", "mmgan_label2mri_3d"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all("has values {0, 1}: MM-GAN needs a brain label (3" in ln for ln in lines)
    assert all("--brain_as_label" in ln and "--brain_mask" in ln for ln in lines)
    assert main(["check-data", str(data), "--bundle", "mmgan_label2mri_3d", "--brain-as-label"]) == 0
    assert main(["check-data", str(data), "--bundle", "wgan_pairs_seg_2d"]) == 0  # binary masks are its convention
    brats = tmp_path / "brats"
    brats.mkdir()
    img, lab = tiny_case(np.random.RandomState(0), (16, 16, 16))
    nib.save(nib.Nifti1Image(img.astype(np.float32), ANISO), str(brats / "a_image.nii.gz"))
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), ANISO), str(brats / "a_label.nii.gz"))
    assert main(["check-data", str(brats), "--bundle", "mmgan_label2mri_3d"]) == 0  # 3 = brain present: valid
    capsys.readouterr()
    assert main(["check-data", str(brats), "--bundle", "mmgan_label2mri_3d", "--brain-as-label"]) == 2
    assert "label values [3] not in the configured set [0, 1, 2, 4]" in capsys.readouterr().err  # as training


def test_mmgan_training_refuses_raw_tumour_labels_and_trains_with_a_brain_mask(tmp_path, tiny_train_overrides):
    data = _tumour_pairs(tmp_path / "clinical", shape=(24, 24, 16))
    with pytest.raises(VolganDataError, match=r"has values \{0, 1\}: MM-GAN needs a brain label \(3"):
        run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(data), output_dir=str(tmp_path / "o1"),
                   max_epochs=1, **tiny_train_overrides)
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(2):
        _, _, brain = _head((24, 24, 16), seed=i)
        nib.save(nib.Nifti1Image(brain.astype(np.uint8), ANISO), str(masks / f"c{i}_brain_mask.nii.gz"))
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(data), output_dir=str(tmp_path / "o2"), max_epochs=1,
               brain_mask=str(masks), **tiny_train_overrides)
    assert (tmp_path / "o2" / "model.pt").is_file()


@pytest.fixture
def tiny_generator(tmp_path):
    """Untrained MM-GAN generator weights with their sidecar (synthesis only needs it to run)."""
    path = tmp_path / "g" / "model.pt"
    path.parent.mkdir()
    torch.manual_seed(0)
    torch.save(SNUNetGenerator(3, 5, 1, channels=(4, 8, 16, 32), norm_stats="running").state_dict(), path)
    weights_sidecar(path).write_text(json.dumps({"network": {"channels": [4, 8, 16, 32], "norm_stats": "running"},
                                                 "trained_with": {"label_values": [0, 1, 2, 3, 4]}}))
    return path


def test_synthesis_refuses_raw_tumour_labels_and_adds_the_brain_label_as_training(tmp_path, tiny_generator):
    data = _tumour_pairs(tmp_path / "clinical", n=1)
    with pytest.raises(VolganDataError, match="needs a brain label"):
        synthesize(data, tiny_generator, tmp_path / "s1", device="cpu")
    with pytest.raises(VolganConfigError, match="needs each label map's image"):
        synthesize(data / "c0_label.nii.gz", tiny_generator, tmp_path / "s2", device="cpu", brain_as_label=True)
    synthesize(data, tiny_generator, tmp_path / "s3", device="cpu", brain_as_label=True)
    written = np.asarray(nib.load(str(tmp_path / "s3" / "c0_label.nii.gz")).dataobj)
    img = np.asarray(nib.load(str(data / "c0_image.nii.gz")).dataobj)
    lab = np.asarray(nib.load(str(data / "c0_label.nii.gz")).dataobj)
    train_rule = BrainLabeld(brain_as_label=True)({"image": img[None], "label": lab[None]})["label"][0]
    np.testing.assert_array_equal(written, train_rule)  # the same brain label as training adds
    from volgan.apps.cli import main  # the CLI passes the same options (volgan synthesize --brain-as-label)

    assert main(["synthesize", str(data), "--ckpt-path", str(tiny_generator), "--output-dir", str(tmp_path / "s4"),
                 "--device", "cpu", "--brain-as-label"]) == 0
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "s4" / "c0_label.nii.gz")).dataobj), train_rule)
    assert main(["synthesize", str(data), "--ckpt-path", str(tiny_generator), "--output-dir", str(tmp_path / "s5"),
                 "--device", "cpu"]) == 2  # raw tumour labels: one line naming the options
    synth = np.asarray(nib.load(str(tmp_path / "s3" / "c0_synth.nii.gz")).dataobj)
    assert synth.shape == lab.shape and np.all(synth[written > 0] > 0)  # z-scored region = the head, not the tumour
