"""P3 bundle (2D slice-wise GAN pre-training): modes, slice-wise inference geometry, 3D evaluation, DDP."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import tiny_case, torchrun_bundle, write_pair
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


@pytest.mark.parametrize("mode", ["ours", "real_only", "elastic"])
def test_modes_train(mode, volumes, tmp_path):
    folder, _ = volumes
    out = tmp_path / mode
    run_bundle("gan_pretrain_seg_2d", "train", dataset_dir=str(folder), output_dir=str(out), mode=mode, **TINY)
    assert (out / "model.pt").is_file() and (out / "finetune" / "checkpoint_1.pt").is_file()
    assert (out / "gan" / "checkpoint_1.pt").is_file() == (mode == "ours")
    if mode == "ours":
        ck = torch.load(out / "gan" / "checkpoint_1.pt", weights_only=True)
        assert set(ck) >= {"generator", "discriminator", "segmentor", "s_optimizer", "trainer"}


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
    run_bundle("gan_pretrain_seg_2d", "evaluate", dataset_dir=str(folder), ckpt_path=str(out / "model.pt"),
               output_dir=str(ev), device="cpu", image_size=[32, 32], seg_channels=TINY["seg_channels"])
    res = json.loads((ev / "results.json").read_text(encoding="utf-8"))["results"]["held-out volumes"]
    assert res["n_test"] == 2 and 0 <= res["summary"]["Dice"][0] <= 1


def test_torchrun_two_cpu_processes(volumes, tmp_path):
    folder, _ = volumes
    out = tmp_path / "ddp"
    tiny = {k: v for k, v in TINY.items() if k not in ("device", "amp")}
    torchrun_bundle("gan_pretrain_seg_2d", 29523, dataset_dir=folder, output_dir=out, **tiny)
    assert (out / "model.pt").is_file() and len(list((out / "logs").glob("events*"))) == 1
    assert (out / "gan" / "checkpoint_1.pt").is_file()
