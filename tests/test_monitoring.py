"""Watching a run (#21 item 5, #22 item 4): the GAN health monitor on every trainer (a diverging WGAN-GP made with a
huge learning rate), checkpoint frequency, progress lines and TensorBoard (grid order, epoch scalars, images on
short epochs, hparams) read back from the event files."""

import io
import json
import logging

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedTrainer
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from volgan.engines import Stage, StagedTraining, WganGpTrainer
from volgan.handlers import (GanHealthMonitor, MemoryEstimate, TensorBoardGanHandler, TrainingMonitor, checkpoint_interval,
                             latest_checkpoint, summary_writer)
from volgan.networks import PairGenerator, DCGANCritic


def _pairs(n_batches=2, batch=4, size=16):
    """Tiny 2D image + mask pairs: ramps of random slope, discs of random radius."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = []
    for _ in range(n_batches):
        slope = torch.rand(batch, 1, 1, generator=g)
        radius = 0.2 + 0.6 * torch.rand(batch, 1, 1, generator=g)
        out.append({"image": (slope * xx)[:, None], "label": ((xx**2 + yy**2) < radius).float()[:, None]})
    return out


def _wgan(lr, max_epochs=4, **kw):
    torch.manual_seed(0)
    g, d = PairGenerator(2, latent_dim=8, size=16, channels=16), DCGANCritic(2, 2, size=16, channels=8)
    return WganGpTrainer("cpu", max_epochs, _pairs(), g, d, torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.9)),
                         torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.9)), latent_dim=8, n_critic=1,
                         max_nonfinite_steps=0, **kw)


def test_diverging_wgan_gp_is_reported_and_a_healthy_one_is_not(tmp_path):
    """A real WGAN-GP trainer with Adam at lr 1 on tiny 2D pairs: |W| and the gradient penalty explode within a few
    iterations; the monitor says so in a plain sentence with what to try, once per episode, in
    ``engine.state.gan_warnings`` and in the run folder's report. The same run at lr 1e-4 raises nothing."""
    report = tmp_path / "gan_health.json"
    bad = _wgan(1.0, max_epochs=2)
    GanHealthMonitor(interval=1, patience=2, lr_options="--lr_gan", report_path=report).attach(bad)
    bad.run()
    warnings = bad.state.gan_warnings
    assert any("WGAN-GP divergence: the gradient penalty is" in w for w in warnings), warnings
    assert all("lower the learning rate (--lr_gan)" in w for w in warnings if "WGAN-GP" in w)
    assert len([w for w in warnings if "gradient penalty is" in w]) == 1  # once per episode
    saved = json.loads(report.read_text())["gan"]
    assert "gradient penalty" in {r["check"] for r in saved["warnings"]}
    assert saved["checks"] == 4 and saved["last_iteration"] == 4

    good = _wgan(1e-4, max_epochs=2)
    GanHealthMonitor(interval=1, patience=2, report_path=tmp_path / "good.json").attach(good)
    good.run()
    assert good.state.gan_warnings == []
    assert json.loads((tmp_path / "good.json").read_text())["gan"]["warnings"] == []  # checked, nothing found


def _scripted(outputs):
    it = iter(outputs)
    return Engine(lambda e, b: next(it))


def test_lsgan_cycle_and_non_finite_checks():
    """Domination needs ``patience`` checks and restarts its episode when the gap closes; collapse is checked on
    every generated key (cycle GAN: fake_a / fake_b, batch spread); a NaN is reported at its first check."""
    dom = {"d_real": torch.tensor(0.98), "d_fake": torch.tensor(0.02), "fake": torch.rand(2, 1, 8, 8)}
    ok = {"d_real": torch.tensor(0.6), "d_fake": torch.tensor(0.4), "fake": torch.rand(2, 1, 8, 8)}
    engine = _scripted([dom, dom, ok, dom, dom, dom, dom])
    GanHealthMonitor(interval=1, patience=2, lr_options="--lr_g/--lr_d").attach(engine)
    engine.run([0] * 7, max_epochs=1)
    assert [w.split(":")[0] for w in engine.state.gan_warnings] == ["gan iteration 2", "gan iteration 5"]
    assert "a lower discriminator learning rate (--lr_g/--lr_d)" in engine.state.gan_warnings[0]

    same = torch.rand(1, 1, 8, 8).repeat(3, 1, 1, 1)  # three identical samples: collapsed, though not constant
    cycle = {"fake_a": same, "fake_b": torch.rand(3, 1, 8, 8), "d_loss": torch.tensor(float("nan"))}
    engine = _scripted([cycle] * 3)
    GanHealthMonitor(interval=1, patience=3).attach(engine)
    engine.run([0] * 3, max_epochs=1)
    collapse = [w for w in engine.state.gan_warnings if "mode collapse" in w]
    nan = [w for w in engine.state.gan_warnings if "non-finite" in w]
    assert len(collapse) == 1 and "'fake_a'" in collapse[0] and "iteration 3" in collapse[0]
    assert len(nan) == 1 and "d_loss" in nan[0] and "iteration 1" in nan[0]

    wgan = [{"wasserstein": torch.tensor(-1459.0), "gp": torch.tensor(2.0)}] * 3  # issue #21's diverged |W|
    engine = _scripted(wgan + [{"wasserstein": torch.tensor(-3.0), "gp": torch.tensor(641.0)}] * 3)
    GanHealthMonitor(interval=1, patience=3).attach(engine)
    engine.run([0] * 6, max_epochs=1)
    assert len(engine.state.gan_warnings) == 2
    assert "|W| is 1459 (above 1000" in engine.state.gan_warnings[0]
    assert "gradient penalty is 641 (above 100" in engine.state.gan_warnings[1]


def _trainer(max_epochs, net):
    data = [{"image": torch.rand(2, 3), "label": torch.rand(2, 1)} for _ in range(2)]
    return SupervisedTrainer("cpu", max_epochs, data, net, torch.optim.SGD(net.parameters(), lr=0.1),
                             torch.nn.MSELoss(), decollate=False)


def test_save_interval_writes_every_nth_and_the_last_epoch_and_resumes(tmp_path):
    net = torch.nn.Linear(3, 1)
    first = _trainer(5, net)
    run = StagedTraining([Stage("s", first, {"net": net, "trainer": first}, subdir="")], tmp_path, n_saved=10,
                         save_interval=2)
    run.run()
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == [
        "checkpoint_2.pt", "checkpoint_4.pt", "checkpoint_5.pt"]  # every 2nd and the final epoch
    weights = {k: v.clone() for k, v in net.state_dict().items()}

    net2 = torch.nn.Linear(3, 1)
    second = _trainer(8, net2)
    loaded = {}
    second.add_event_handler(Events.EPOCH_STARTED(once=6), lambda e: loaded.update({k: v.clone() for k, v in net2.state_dict().items()}))
    resumed = StagedTraining([Stage("s", second, {"net": net2, "trainer": second}, subdir="")], tmp_path,
                             n_saved=2, save_interval=2)
    resumed.run()
    assert resumed.resumed_from["s"].name == "checkpoint_5.pt"
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)  # continued from the last epoch's state
    assert second.state.epoch == 8 and second.state.iteration == 16
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*.pt")) == ["checkpoint_6.pt", "checkpoint_8.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_8.pt"
    assert checkpoint_interval(500, range(2)) == 250 and checkpoint_interval(500, range(1000)) == 1


def test_grid_is_label_map_real_synthetic_left_to_right():
    """The grid's tiles follow its tag; a one-hot condition shows as its class index."""
    cond = torch.zeros(1, 3, 6, 4, 5)
    cond[:, 2, :3] = 1  # class 2 in the first half of axis 0, class 0 elsewhere
    cond[:, 0, 3:] = 1
    real, fake = torch.rand(1, 1, 6, 4, 5), -torch.rand(1, 1, 6, 4, 5)
    h = TensorBoardGanHandler(summary_writer=object(), image_keys=("cond", "real", "fake"))
    grid = h.grid({"cond": cond, "real": real, "fake": fake})[0]
    assert h.image_tag == "images/cond | real | fake"
    assert grid.shape == (4, 3 * 6 + 2)  # three 4 x 6 tiles (axis 1 up, axis 0 across), 1-pixel lines between

    def shown(x):  # mid axial slice, scaled to [0, 1], axis 0 across, axis 1 up
        t = x[0, 0, :, :, 2]
        return ((t - t.min()) / (t.max() - t.min())).T.flip(0)

    assert torch.equal(grid[:, :6], shown(cond.argmax(1, keepdim=True).float()))
    assert torch.allclose(grid[:, 7:13], shown(real)) and torch.allclose(grid[:, 14:], shown(fake))
    assert torch.equal(grid[:, 6], torch.ones(4)) and torch.equal(grid[:, 13], torch.ones(4))


def _events(folder):
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


class _Messages(logging.Handler):
    """The messages a logger emits, whatever the process's logging configuration did to its stream handlers (a
    bundle run earlier in the session may have bound them to a stream pytest has closed)."""

    def __init__(self, logger: logging.Logger):
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        logger.addHandler(self)
        logger.setLevel(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_short_epochs_log_scalars_images_epoch_means_and_hparams(tmp_path):
    """Defaults (log every 50, images every 200) on 2-iteration epochs: TensorBoard still gets the epoch means of
    every loss, an image grid and learning rates; hparams at the end. Off a terminal a progress line carries the
    percentage and ETA; with the progress bar on, no per-iteration log line breaks it."""
    trainer = _wgan(1e-4, max_epochs=3)
    logs = tmp_path / "logs"
    monitor = TrainingMonitor("gan", logs, log_interval=2, image_interval=200, image_keys=["real", "fake"],
                              optimizers={"g": trainer.optimizers["g"]}, gan_health=True, progress=False,
                              hparams={"image_size": [16, 16]})
    monitor.attach(trainer)
    seen = _Messages(monitor.stats.logger)
    trainer.run()
    summary_writer(logs).flush()
    acc = _events(logs)
    for key in ("d_loss", "g_loss", "gp", "wasserstein"):
        assert [e.step for e in acc.Scalars(f"epoch/gan/{key}")] == [1, 2, 3]
    assert [e.step for e in acc.Images("images/real | fake")] == [2]  # first epoch (none due before 200)
    png = Image.open(io.BytesIO(acc.Images("images/real | fake")[0].encoded_image_string))
    assert png.size == (16 * 2 + 1, 16)
    assert [e.step for e in acc.Scalars("lr/g")] == [2, 4, 6]
    hp = _events(logs / "hparams_gan")
    assert "final/d_loss" in hp.Tags()["scalars"] or any("final/d_loss" in t for t in hp.Tags()["tensors"])
    content = hp.PluginTagToContent("hparams")
    assert b"image_size" in b"".join(content.values()) and b"lr_g" in b"".join(content.values())
    assert json.loads((tmp_path / "gan_health.json").read_text())["gan"]["warnings"] == []
    lines = [m for m in seen.messages if m.startswith("gan: ")]
    assert any("iteration 2/6 (33 %), ETA" in m and "d_loss" in m and "epoch means" in m for m in lines), lines
    assert any("iteration 6/6 (100 %), ETA 0:00:00" in m for m in lines)

    trainer = _wgan(1e-4, max_epochs=2)
    bar = TrainingMonitor("bar", tmp_path / "logs2", log_interval=1, progress=True)
    bar.attach(trainer)
    seen = _Messages(bar.stats.logger)
    trainer.run()
    lines = [m for m in seen.messages if m.startswith("bar: ")]
    assert lines and all("epoch means" in m for m in lines)  # epoch summaries only: the bar shows the iterations


@pytest.mark.parametrize("bundle", ["mmgan_label2mri_3d", "cycleshape_ct_mri_3d", "gan_pretrain_seg_2d",
                                    "adversarial_unet_aug_2d", "wgan_pairs_seg_2d"])
def test_every_gan_bundle_monitors_health_and_exposes_checkpoint_frequency(bundle):
    from monai.bundle import ConfigParser

    from tests.conftest import BUNDLES

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.yaml"))
    cfg = parser.get()
    assert "save_interval" in cfg and "n_saved" in cfg
    assert cfg["train"]["trainer"]["save_interval"] == "@save_interval"
    text = (BUNDLES / bundle / "configs" / "train.yaml").read_text()
    gan_monitors = [line for line in text.splitlines() if "TrainingMonitor" in line and "image_keys" in line]
    assert gan_monitors and all("gan_health: {lr_options:" in line for line in gan_monitors)
    assert np.isfinite(float(cfg["n_saved"]))


def test_memory_estimate_says_up_front_when_the_defaults_will_not_fit(caplog):
    """P4's defaults (GAN batch 16 at 256 x 256) on a 24 GB machine: one warning line with the estimate and the option
    that lowers it; nothing on a machine with room, or at a small image size."""
    from monai.bundle import ConfigParser

    from tests.conftest import BUNDLES

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "adversarial_unet_aug_2d" / "configs" / "train.yaml"))
    block = next(h for h in parser.get()["gan"]["handlers"] if "MemoryEstimate" in str(h.get("_target_")))
    kw = {k: v for k, v in block.items() if not str(k).startswith("_") and k not in ("batch_size", "image_size", "device")}
    est = MemoryEstimate(batch_size=16, image_size=[256, 256], available_gb=23.4, **kw)
    with caplog.at_level(logging.WARNING):
        est()
    (line,) = [r.getMessage() for r in caplog.records]
    assert "batch 16 needs about 21 GB" in line and "--gan_batch_size 7 needs about" in line
    assert MemoryEstimate(batch_size=16, image_size=[256, 256], available_gb=139, **kw).message() is None
    assert MemoryEstimate(batch_size=16, image_size=[64, 64], available_gb=23.4, **kw).message() is None
