"""P3 bundle (2D slice-wise GAN pre-training): modes, slice-wise inference geometry, 3D evaluation, DDP."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import tiny_case, torchrun_bundle, write_pair
import volgan.synthesis
from volgan.bundle import run_bundle

TINY = dict(device="cpu", image_size=[32, 32], ngf=8, n_blocks=2, disc_channels=[8, 16, 16, 16],
            disc_strides=[2, 2, 1, 1], seg_channels=[8, 16, 32, 64], log_interval=5, image_interval=5, amp=False,
            gan_epochs=1, finetune_epochs=1)


@pytest.fixture
def volumes(tmp_path):
    rng = np.random.RandomState(0)
    d = tmp_path / "vols"
    d.mkdir()
    aff = np.diag([1.5, 1.5, 3.0, 1.0])
    return d, [write_pair(d, f"c{i}", *tiny_case(rng, (24, 20, 8)), affine=aff) for i in range(2)]


@pytest.mark.parametrize("mode", ["ours", "real_only", "elastic", "gan_mix", "gan_pretrain", "gaussian_mix"])
def test_modes_train(mode, volumes, tmp_path):
    folder, _ = volumes
    out = tmp_path / mode
    wf = run_bundle("gan_pretrain_seg_2d", "train", dataset_dir=str(folder), output_dir=str(out), mode=mode,
                    synthetic_copies=2, **TINY)
    assert (out / "model.pt").is_file() and (out / "finetune" / "checkpoint_1.pt").is_file()
    assert (out / "gan" / "checkpoint_1.pt").is_file() == (mode in ("ours", "gan_mix", "gan_pretrain"))
    assert (out / "pretrain" / "checkpoint_1.pt").is_file() == (mode == "gan_pretrain")
    if mode == "ours":
        ck = torch.load(out / "gan" / "checkpoint_1.pt", weights_only=True)
        assert set(ck) >= {"generator", "discriminator", "segmentor", "s_optimizer", "trainer"}
    n_real = len(wf.parser.get_parsed_content("slices"))
    n_stage2 = len(wf.parser.get_parsed_content("train#dataset"))
    assert n_stage2 == (3 * n_real if mode in ("gan_mix", "gaussian_mix") else n_real)  # + 2 synthetic per slice
    if mode in ("gan_mix", "gan_pretrain", "gaussian_mix"):
        syn = wf.parser.get_parsed_content("synthetic")
        assert len(syn) == 2 * n_real
        item = syn[0]
        assert item["image"].shape == (1, 32, 32) and -1 <= item["image"].min() and item["image"].max() <= 1
        assert item["label"].shape == (1, 32, 32) and not item["label"].is_floating_point()
        assert isinstance(syn, volgan.synthesis.OfflineGaussianSlices) == (mode == "gaussian_mix")


def test_gaussian_slices_follow_the_real_intensities_per_label():
    """The non-GAN baseline (#20): per-label means of the drawn slices match the real slices' (background included,
    as 2D CT/MRI slices have anatomy there), labels are deformed copies, images stay in [-1, 1]."""
    rng = np.random.RandomState(0)
    slices = []
    for _ in range(4):
        label = np.zeros((1, 32, 32), np.int64)
        label[0, 8:20, 10:24] = 1
        image = np.where(label == 1, 0.6, -0.4) + rng.normal(0, 0.05, label.shape)
        slices.append({"image": torch.as_tensor(image, dtype=torch.float32), "label": torch.as_tensor(label)})
    out = volgan.synthesis.gaussian_slices(slices, copies=2, seed=3, sigma=0.0)
    assert len(out) == 8 and all(o["image"].shape == (1, 32, 32) for o in out)
    img = torch.stack([o["image"] for o in out]).numpy()
    lab = torch.stack([o["label"] for o in out]).numpy()
    assert abs(img[lab == 1].mean() - 0.6) < 0.02 and abs(img[lab == 0].mean() + 0.4) < 0.02
    assert img.min() >= -1 and img.max() <= 1
    assert not np.array_equal(lab[0], slices[0]["label"].numpy())  # deformed, not copied
    again = volgan.synthesis.gaussian_slices(slices, copies=2, seed=3, sigma=0.0)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(out, again))  # seeded


def test_stage2_starts_from_the_stage1_segmentor(volumes, tmp_path):
    """P3 Sec. 2.2: the fine-tuning stage begins with exactly the segmentor stage 1 left (no re-initialisation)."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    from volgan.bundle import bundle_path

    folder, _ = volumes
    root = bundle_path("gan_pretrain_seg_2d")
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(root), "dataset_dir": str(folder), "output_dir": str(tmp_path / "o"), **TINY})
    gan, finetune = parser.get_parsed_content("gan#trainer"), parser.get_parsed_content("train#finetune_trainer")
    seen = {}
    gan.add_event_handler(Events.COMPLETED, lambda e: seen.update(
        stage1={k: v.detach().clone() for k, v in gan.s_network.state_dict().items()}))
    finetune.add_event_handler(Events.STARTED, lambda e: seen.update(
        stage2={k: v.detach().clone() for k, v in finetune.network.state_dict().items()}))
    before = {k: v.detach().clone() for k, v in gan.s_network.state_dict().items()}
    gan.run()
    finetune.run()
    assert set(seen) == {"stage1", "stage2"}
    assert any(not torch.equal(before[k], seen["stage1"][k]) for k in before)  # stage 1 trained S
    assert all(torch.equal(seen["stage1"][k], seen["stage2"][k]) for k in before)
    after = finetune.network.state_dict()
    assert any(not torch.equal(after[k], seen["stage2"][k]) for k in before)  # and stage 2 changed it


@pytest.mark.parametrize("problem", ["3d_where_2d", "size_mismatch", "empty_mask"])
def test_bad_inputs_name_the_file(problem, tmp_path):
    """The 2D pipeline's bad inputs: a 3D volume where 2D is configured, image/mask size mismatch, no voxel of
    the configured foreground label: one VolganDataError naming the file, and no model written."""
    from volgan.errors import VolganDataError

    rng = np.random.RandomState(1)
    d = tmp_path / "bad"
    d.mkdir()
    img, lab = tiny_case(rng, (24, 20, 8))
    extra = {}
    if problem == "size_mismatch":
        lab = lab[:, :18]
    if problem == "empty_mask":
        extra["foreground"] = [7]
    if problem == "3d_where_2d":
        extra["input_dims"] = 2
    bad = write_pair(d, "c0", img, lab)
    out = tmp_path / "out"
    with pytest.raises(VolganDataError) as err:
        run_bundle("gan_pretrain_seg_2d", "train", dataset_dir=str(d), output_dir=str(out), **{**TINY, **extra})
    assert (bad["image"] if problem == "3d_where_2d" else bad["label"]) in str(err.value)
    assert {"3d_where_2d": "dimension", "size_mismatch": "does not match", "empty_mask": "empty mask"}[problem] \
        in str(err.value)
    assert not (out / "model.pt").exists()


def test_inference_and_evaluation(volumes, tmp_path):
    folder, items = volumes
    out = tmp_path / "run"
    run_bundle("gan_pretrain_seg_2d", "train", dataset_dir=str(folder), output_dir=str(out), **TINY)
    seg = tmp_path / "seg"
    run_bundle("gan_pretrain_seg_2d", "inference", input=str(folder), ckpt_path=str(out / "model.pt"),
               output_dir=str(seg), device="cpu", image_size=[32, 32], seg_channels=TINY["seg_channels"])
    written = sorted(seg.glob("*_seg.nii.gz"))
    assert [p.name for p in written] == ["c0_image_seg.nii.gz", "c1_image_seg.nii.gz"]  # images only, not labels
    for p, it in zip(written, items):
        ref, s = nib.load(it["image"]), nib.load(str(p))
        assert s.shape == ref.shape
        np.testing.assert_allclose(s.affine, ref.affine, atol=1e-5)
        assert set(np.unique(np.asarray(s.dataobj))) <= {0, 1}
    ev = tmp_path / "eval"
    run_bundle("gan_pretrain_seg_2d", "evaluate", dataset_dir=str(folder), output_dir=str(out), eval_dir=str(ev),
               **TINY)
    res = json.loads((ev / "results.json").read_text(encoding="utf-8"))["results"]["held-out volumes"]
    assert res["n_test"] == 2 and 0 <= res["summary"]["Dice"][0] <= 1


def test_torchrun_two_cpu_processes(volumes, tmp_path):
    folder, _ = volumes
    out = tmp_path / "ddp"
    tiny = {k: v for k, v in TINY.items() if k not in ("device", "amp")}
    torchrun_bundle("gan_pretrain_seg_2d", 29523, dataset_dir=folder, output_dir=out, mode="gan_pretrain",
                    synthetic_copies=1, **tiny)  # all three stages: GAN, pre-training on synthetic, fine-tuning
    assert (out / "model.pt").is_file() and len(list((out / "logs").glob("events*"))) == 1
    assert (out / "gan" / "checkpoint_1.pt").is_file() and (out / "pretrain" / "checkpoint_1.pt").is_file()
