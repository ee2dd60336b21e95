"""MLflow as an option of every bundle (issue #7): one run per bundle execution, every engine's scalars under its
prefix, learning rates and validation metrics; off by default; a clear error without mlflow."""

import sys

import numpy as np
import pytest

from tests.conftest import write_cases
from volgan.bundle import run_bundle
from volgan.errors import VolganConfigError

mlflow = pytest.importorskip("mlflow")

TINY_P5 = dict(device="cpu", image_size=[32, 32], gen_channels=32, critic_channels=8, unet_channels=[8, 8, 8],
               gan_iterations=4, max_epochs=2, val_interval=1, patience_iterations=100, val_fraction=0.25,
               log_interval=1, amp=False, ratio="8-8", n_critic=1)


@pytest.fixture
def volumes(tmp_path):
    return write_cases(tmp_path / "vols", 4, depth=8)


def _runs(uri, experiment):
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} at {uri}"
    return client, client.search_runs([exp.experiment_id])


def test_p5_bundle_logs_every_engine_into_one_run(volumes, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    run_bundle("wgan_pairs_seg_2d", "train", dataset_dir=str(volumes), output_dir=str(out),
               mlflow_tracking_uri=uri, mlflow_experiment="p5_test", **TINY_P5)
    client, runs = _runs(uri, "p5_test")
    assert len(runs) == 1, [r.info.run_name for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED"  # finalize closed it
    metrics = set(run.data.metrics)
    assert {"gan/d_loss", "gan/g_loss", "unet/loss", "unet_val/val_loss", "lr/g", "lr/d", "lr/unet"} <= metrics, metrics
    g_loss = client.get_metric_history(run.info.run_id, "gan/g_loss")
    assert len(g_loss) == 4 and all(np.isfinite(m.value) for m in g_loss)  # every iteration (log_interval 1)
    val = client.get_metric_history(run.info.run_id, "unet_val/val_loss")
    unet_its = [m.step for m in client.get_metric_history(run.info.run_id, "unet/loss")]
    assert val and {m.step for m in val} <= set(unet_its)  # reported at the U-Net's iteration
    assert run.data.params["max_epochs"]  # MONAI's default tracking params
    # TensorBoard keeps working beside MLflow, the U-Net loss included (once dropped as a one-element tuple)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "logs"), size_guidance={"scalars": 0})
    acc.Reload()
    assert {"unet_loss", "g_loss", "d_loss"} <= set(acc.Tags()["scalars"]), acc.Tags()["scalars"]


def test_mmgan_bundle_with_validation_logs_ssim(tmp_path, tiny_dataset, tiny_train_overrides):
    folder, _ = tiny_dataset
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(folder), val_dataset_dir=str(folder),
               output_dir=str(tmp_path / "out"), max_epochs=2, mlflow_tracking_uri=uri, mlflow_experiment="mmgan_test",
               **{**tiny_train_overrides, "log_interval": 1})
    client, runs = _runs(uri, "mmgan_test")
    assert len(runs) == 1
    ssim = client.get_metric_history(runs[0].info.run_id, "val/val_ssim")
    assert sorted(m.step for m in ssim) == [1, 2]  # at the trainer's epochs
    assert {"train/g_loss", "train/d_loss", "lr/g", "lr/d"} <= set(runs[0].data.metrics)


def test_tracking_off_by_default_and_clear_error_without_mlflow(volumes, tmp_path, monkeypatch):
    from volgan.tracking import MLflowTracking

    assert not MLflowTracking(None).enabled and MLflowTracking(None).attach({"x": object()}).handlers == []
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(VolganConfigError, match="mlflow is not installed"):
        run_bundle("wgan_pairs_seg_2d", "train", dataset_dir=str(volumes), output_dir=str(tmp_path / "o"),
                   mlflow_tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", **TINY_P5)
    assert not (tmp_path / "o" / "model.pt").exists()
