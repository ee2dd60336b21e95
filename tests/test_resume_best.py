"""Best-by-validation survives a resume (issue #17): train, validate, stop, resume with a worse validation score,
and the best model file is unchanged (3D: MM-GAN's SSIM; 2D: P5's validation loss)."""

from __future__ import annotations

import hashlib

import torch
from ignite.engine import Events
from monai.bundle import ConfigParser

from tests.conftest import BUNDLES, write_cases


def _run(bundle: str, worse: float | None = None, **overrides):
    """Parse and run ``bundle``'s train.yaml; with ``worse``, every validation of this run reports ``worse``."""
    root = BUNDLES / bundle
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(root), **overrides})
    evaluator = parser.get_parsed_content("validate#evaluator")
    if worse is not None:
        def force(engine):  # after the metrics are computed, before the best-model saver looks at them
            engine.state.metrics[engine.state.key_metric_name] = worse

        evaluator.add_event_handler(Events.EPOCH_COMPLETED, force)
    parser.get_parsed_content("initialize")
    parser.get_parsed_content("run")
    return parser


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mmgan_best_generator_survives_a_resume(tmp_path, tiny_dataset, tiny_train_overrides):
    folder, _ = tiny_dataset
    out = tmp_path / "run"
    common = dict(dataset_dir=str(folder), val_dataset_dir=str(folder), output_dir=str(out), **tiny_train_overrides)
    first = _run("mmgan_label2mri_3d", max_epochs=2, **common)
    best = first.get_parsed_content("validate#best_model")
    assert (out / "model_best.pt").is_file() and best.best > -1
    before, best_value = _sha(out / "model_best.pt"), best.best
    ck = torch.load(out / "checkpoint_2.pt", weights_only=True)
    assert ck["best_model"]["best"] == best_value  # the best score is part of the resumable state
    # resumed (the run above ended: as after a kill, only the checkpoints remain) with a worse SSIM
    resumed = _run("mmgan_label2mri_3d", worse=-1.0, max_epochs=3, **common)
    assert resumed.get_parsed_content("train#trainer").resumed_from["train"].name == "checkpoint_2.pt"
    assert resumed.get_parsed_content("validate#best_model").best == best_value
    assert _sha(out / "model_best.pt") == before


def test_p5_best_segmentor_survives_a_resume(tmp_path):
    data = write_cases(tmp_path / "vols", 4, depth=6)
    out = tmp_path / "run"
    common = dict(dataset_dir=str(data), output_dir=str(out), device="cpu", image_size=[32, 32], gen_channels=32,
                  critic_channels=8, unet_channels=[8, 8, 8], gan_iterations=2, val_interval=1,
                  patience_iterations=100, amp=False)
    first = _run("wgan_pairs_seg_2d", max_epochs=2, **common)
    best_value = first.get_parsed_content("validate#evaluator").best_model.best
    before = _sha(out / "model.pt")
    resumed = _run("wgan_pairs_seg_2d", worse=1e9, max_epochs=3, **common)
    assert resumed.get_parsed_content("train#trainer").resumed_from["unet"].name == "checkpoint_2.pt"
    assert resumed.get_parsed_content("validate#evaluator").best_model.best == best_value
    assert _sha(out / "model.pt") == before
