"""P5 bundle: WGAN-GP pairs, U-Net with on-the-fly mixing at each ratio, early stopping, inference, evaluation, DDP."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import tiny_case, torchrun_bundle, write_cases, write_pair
from volgan.bundle import run_bundle

TINY = dict(device="cpu", image_size=[32, 32], gen_channels=32, critic_channels=8, unet_channels=[8, 8, 8],
            gan_iterations=4, max_epochs=3, val_interval=2, patience_iterations=100, val_fraction=0.25,
            log_interval=5, amp=False)


@pytest.fixture
def volumes(tmp_path):
    return write_cases(tmp_path / "vols", 4, depth=8)


@pytest.mark.parametrize("ratio,augment", [("16-0", True), ("8-8", False), ("0-16", False)])
def test_ratios_train(ratio, augment, volumes, tmp_path):
    out = tmp_path / ratio
    run_bundle("wgan_pairs_seg_2d", "train", dataset_dir=str(volumes), output_dir=str(out), ratio=ratio,
               augment=augment, **TINY)
    assert (out / "model.pt").is_file() and (out / "unet" / "checkpoint_3.pt").is_file()
    assert (out / "model_g.pt").is_file() == (ratio != "16-0")  # no GAN needed without synthetic pairs


def test_few_slices_and_explicit_validation_set(tmp_path):
    """Fewer real slices than the ratio asks per minibatch (few-label regimes): the loaders draw with replacement
    so every U-Net batch has exactly n_real real items; ``val_dataset_dir`` keeps every training case."""
    rng = np.random.RandomState(3)
    tr, va = tmp_path / "train", tmp_path / "val"
    tr.mkdir()
    va.mkdir()
    write_pair(tr, "t0", *tiny_case(rng, (24, 24, 4)))
    write_pair(va, "v0", *tiny_case(rng, (24, 24, 4)))
    out = tmp_path / "run"
    wf = run_bundle("wgan_pairs_seg_2d", "train", dataset_dir=str(tr), val_dataset_dir=str(va), output_dir=str(out),
                    ratio="8-8", **{**TINY, "max_epochs": 1})
    slices = wf.parser.get_parsed_content("slices")
    assert [it["image"] for it in slices.train_items] == [str(tr / "t0_image.nii.gz")] and len(slices.val_items) == 1
    n_slices = len(slices.train)
    assert n_slices < 8
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert batch["image"].shape[0] == 8
    img, lab = wf.parser.get_parsed_content("train#mixing")(batch, torch.device("cpu"))
    assert img.shape[0] == 16 and set(torch.unique(lab).tolist()) <= {0, 1}


def test_early_stopping_and_evaluation(volumes, tmp_path):
    out = tmp_path / "run"
    # save_interval 1: a checkpoint per epoch (P5's default saves every ~500 iterations, more than this run has)
    overrides = {**TINY, "max_epochs": 50, "patience_iterations": 2, "val_interval": 1, "lr_unet": 0.0,
                 "save_interval": 1}
    run_bundle("wgan_pairs_seg_2d", "train", dataset_dir=str(volumes), output_dir=str(out), **overrides)
    ck = sorted(out.glob("unet/checkpoint_*.pt"), key=lambda p: int(p.stem.split("_")[1]))[-1]
    last_epoch = int(ck.stem.split("_")[1])
    assert last_epoch < 50  # lr 0: the validation loss never improves -> stopped early
    ck = torch.load(ck, weights_only=True)
    state = ck["trainer"]  # saved where it stopped (inside epoch last_epoch), marked as stopped
    assert (last_epoch - 1) * state["epoch_length"] < state["iteration"] <= last_epoch * state["epoch_length"]
    assert ck["early_stop"]["stopped"]
    seg = tmp_path / "seg"
    run_bundle("wgan_pairs_seg_2d", "inference", input=str(volumes), ckpt_path=str(out / "model.pt"),
               output_dir=str(seg), device="cpu", image_size=[32, 32], unet_channels=[8, 8, 8])
    written = sorted(seg.glob("*_seg.nii.gz"))
    assert len(written) == 4 and nib.load(str(written[0])).shape == (24, 24, 8)
    ev = tmp_path / "eval"
    run_bundle("wgan_pairs_seg_2d", "evaluate", dataset_dir=str(volumes), output_dir=str(out), eval_dir=str(ev),
               **overrides)
    res = json.loads((ev / "results.json").read_text(encoding="utf-8"))["results"]["held-out volumes"]
    assert res["n_test"] == 4 and {"Dice", "HD95 (voxels)", "HD max (voxels)"} <= set(res["summary"])


def test_torchrun_two_cpu_processes(volumes, tmp_path):
    out = tmp_path / "ddp"
    tiny = {k: v for k, v in TINY.items() if k not in ("device", "amp")}
    torchrun_bundle("wgan_pairs_seg_2d", 29529, dataset_dir=volumes, output_dir=out, **tiny)
    assert (out / "model.pt").is_file() and (out / "model_g.pt").is_file()
