"""The GAN stopping criterion of P5/P4 (issue #20 item 4): held-out MMD every N iterations, curve, best generator
kept and restored, stop after ``patience`` validations without a new minimum, state in the checkpoint."""

import csv

import pytest
import torch
from ignite.engine import Engine

from tests.conftest import write_cases
from volgan.bundle import run_bundle
from volgan.data import MixedPairsPrepareBatch
from volgan.errors import VolganConfigError
from volgan.evaluation import GanQualityStopping, SynthesisQualityEvaluator


class OffsetPairs(torch.nn.Module):
    """G(z): an image ``offset + 0.1 z_0`` and a mask of a fixed square; its distance to real pairs (image 0 + noise)
    grows with |offset|."""

    def __init__(self, offset: float):
        super().__init__()
        self.offset = torch.nn.Parameter(torch.tensor(float(offset)))

    def forward(self, z):
        img = self.offset + 0.1 * z[:, :1, None, None] + 0.05 * z[:, 1:2, None, None] * torch.linspace(-1, 1, 32)
        img = img.expand(-1, 1, 32, 32)
        mask = -torch.ones_like(img)
        mask[..., 8:24, 8:24] = 1.0
        return torch.cat([img, mask], 1)


def _real(n=12):
    g = torch.Generator().manual_seed(1)
    lab = torch.zeros(n, 1, 32, 32)
    lab[..., 8:24, 8:24] = 1
    return [{"image": 0.1 * torch.randn(n, 1, 32, 32, generator=g), "label": lab}]


def _train(step: float, offset: float, iterations: int, tmp_path, patience: int):
    g = OffsetPairs(offset)
    sampler = MixedPairsPrepareBatch(g, n_real=0, n_synthetic=24, latent_dim=4)
    stop = GanQualityStopping(g, sampler, [{"image": torch.zeros(1, 1, 32, 32), "label": torch.zeros(1, 1, 32, 32)}],
                              _real(), tmp_path, interval=1, patience=patience)

    def update(engine, batch):
        with torch.no_grad():
            g.offset += step

    trainer = Engine(update)
    stop.attach(trainer)
    trainer.run([0], max_epochs=iterations)
    with open(tmp_path / "gan_val_curve.csv") as f:
        rows = list(csv.DictReader(f))
    return g, trainer, stop, rows


def test_stops_after_patience_and_restores_the_best(tmp_path):
    g, trainer, stop, rows = _train(+0.5, 0.0, 20, tmp_path, patience=2)
    mmd = [float(r["val_mmd"]) for r in rows]
    assert trainer.state.iteration == 3 and len(rows) == 3  # best at iteration 1, two worse validations, stop
    assert mmd[0] < mmd[1] < mmd[2]
    assert abs(float(g.offset.detach()) - 0.5) < 1e-6  # the generator of iteration 1, not of iteration 3
    assert (tmp_path / "model_g_best.pt").is_file()
    state = stop.state_dict()
    assert state["early_stop"]["counter"] == 2 and abs(state["best"]["best"] - mmd[0]) < 1e-12


def test_improving_generator_trains_to_the_end(tmp_path):
    # offsets 0.7 .. 0.2: far enough from the real pairs to fall at every step, near enough that the median-bandwidth
    # MMD is not saturated (from offset ~1 on it is flat at ~1.84 and its order is rounding noise of the machine's BLAS)
    g, trainer, _, rows = _train(-0.1, 0.8, 6, tmp_path, patience=2)
    mmd = [float(r["val_mmd"]) for r in rows]
    assert trainer.state.iteration == 6 and len(rows) == 6
    assert all(a > b + 0.01 for a, b in zip(mmd, mmd[1:]))
    assert abs(float(g.offset.detach()) - 0.2) < 1e-6  # the last one is the best


def test_interval_zero_attaches_nothing(tmp_path):
    g = OffsetPairs(0.0)
    stop = GanQualityStopping(g, MixedPairsPrepareBatch(g, 0, 4, 4), [], [], tmp_path, interval=0)
    trainer = Engine(lambda e, b: None)
    stop.attach(trainer)
    trainer.run([0], max_epochs=3)
    assert not (tmp_path / "gan_val_curve.csv").exists()


def test_p5_bundle_records_the_gan_curve_and_keeps_its_state(tmp_path):
    vols = write_cases(tmp_path / "vols", 4, depth=8)
    out = tmp_path / "run"
    run_bundle("wgan_pairs_seg_2d", "train", dataset_dir=str(vols), output_dir=str(out), device="cpu",
               image_size=[32, 32], gen_channels=32, critic_channels=8, unet_channels=[8, 8, 8], gan_iterations=6,
               gan_val_interval=2, gan_val_samples=8, max_epochs=1, val_interval=2, patience_iterations=100,
               val_fraction=0.25, amp=False)
    with open(out / "gan_val_curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6]
    assert all(float(r["val_mmd"]) >= 0 for r in rows)
    assert (out / "model_g_best.pt").is_file() and (out / "model_g.pt").is_file()
    ckpt = torch.load(sorted((out / "gan").glob("checkpoint_*.pt"))[-1], weights_only=False)
    assert ckpt["quality_stop"]["best"]["best"] == min(float(r["val_mmd"]) for r in rows)


def test_p4_bundle_stops_on_patience_and_exports_the_best_generator(tmp_path):
    from tests.test_adversarial_unet import TINY as P4_TINY
    vols = write_cases(tmp_path / "vols", 4, depth=8)
    out = tmp_path / "run"
    run_bundle("adversarial_unet_aug_2d", "train", dataset_dir=str(vols), output_dir=str(out),
               **dict(P4_TINY, gan_iterations=40, gan_val_interval=1, gan_val_patience=1, gan_val_samples=8,
                      lr_gan=0.05))
    with open(out / "gan_val_curve.csv") as f:
        mmd = [float(r["val_mmd"]) for r in csv.DictReader(f)]
    # stopped at the first validation without a new minimum, well before 40 iterations
    assert 2 <= len(mmd) < 40 and mmd[-1] >= min(mmd[:-1]) and all(a > b for a, b in zip(mmd[:-1], mmd[1:-1]))
    best = torch.load(out / "model_g_best.pt", weights_only=True)
    final = torch.load(out / "model_g.pt", weights_only=True)  # exported after the best was restored
    assert all(torch.equal(best[k], final[k]) for k in best)


def test_p3_bundle_stops_stage_one_on_held_out_ssim(tmp_path):
    from tests.test_gan_pretrain_2d import TINY as P3_TINY
    import numpy as np
    from tests.conftest import tiny_case, write_pair
    rng = np.random.RandomState(0)
    train, val = tmp_path / "train", tmp_path / "val"
    train.mkdir(), val.mkdir()
    for i in range(2):
        write_pair(train, f"c{i}", *tiny_case(rng, (24, 20, 8)))
    write_pair(val, "v0", *tiny_case(rng, (24, 20, 8)))
    out = tmp_path / "run"
    run_bundle("gan_pretrain_seg_2d", "train", dataset_dir=str(train), output_dir=str(out), val_dataset_dir=str(val),
               **dict(P3_TINY, gan_epochs=30, gan_val_interval=1, gan_val_patience=1, lr_g=0.02, lr_d=0.02))
    with open(out / "gan_val_curve.csv") as f:
        ssim = [float(r["val_ssim"]) for r in csv.DictReader(f)]
    assert 2 <= len(ssim) < 30 and ssim[-1] <= max(ssim[:-1]) and all(a < b for a, b in zip(ssim[:-1], ssim[1:-1]))
    best = torch.load(out / "model_g_best.pt", weights_only=True)
    final = torch.load(out / "model_g.pt", weights_only=True)
    assert all(torch.equal(best[k], final[k]) for k in best)
    # without a validation set stage 1 runs its epochs and records nothing
    run_bundle("gan_pretrain_seg_2d", "train", dataset_dir=str(train), output_dir=str(tmp_path / "plain"),
               **dict(P3_TINY, gan_epochs=2))
    assert not (tmp_path / "plain" / "gan_val_curve.csv").exists()


def test_an_early_stopped_run_keeps_its_checkpoint_and_resumes_as_stopped(tmp_path):
    """#21: the U-Net stage stopped by its validation loss long before its first save interval (P5's default:
    about every 500 iterations) still ends in a checkpoint, which says it stopped; run again, it trains no more."""
    vols = write_cases(tmp_path / "vols", 4, depth=8)
    out = tmp_path / "run"
    kw = dict(device="cpu", image_size=[32, 32], gen_channels=32, critic_channels=8, unet_channels=[8, 8, 8],
              ratio="16-0", max_epochs=200, val_interval=1, patience_iterations=2, lr_unet=0.0, val_fraction=0.25,
              amp=False)
    run_bundle("wgan_pairs_seg_2d", "train", dataset_dir=str(vols), output_dir=str(out), **kw)
    cks = sorted(out.glob("unet/checkpoint_*.pt"))
    assert len(cks) == 1
    ck = torch.load(cks[0], weights_only=True)
    assert ck["early_stop"]["stopped"] and ck["trainer"]["iteration"] < 200 * ck["trainer"]["epoch_length"]
    best = (out / "model.pt").stat().st_mtime_ns
    wf = run_bundle("wgan_pairs_seg_2d", "train", dataset_dir=str(vols), output_dir=str(out), **kw)
    trainer = wf.parser.get_parsed_content("train#segmentor_trainer")
    assert trainer.state.iteration == ck["trainer"]["iteration"]  # resumed as stopped: not one more iteration
    assert (out / "model.pt").stat().st_mtime_ns == best


def test_an_empty_validation_set_is_one_clear_error(tmp_path):
    g = OffsetPairs(0.0)
    ev = SynthesisQualityEvaluator(MixedPairsPrepareBatch(g, 0, 4, 4), [{"image": torch.zeros(1, 1, 32, 32),
                                                                        "label": torch.zeros(1, 1, 32, 32)}], [])
    with pytest.raises(VolganConfigError, match="--val_dataset_dir"):
        ev.run()


def test_settings_that_share_a_gan_use_its_best_generator(tmp_path):
    """#20: a setting that reuses another setting's GAN trained to the stopping criterion gets the generator that
    setting kept as its best (``model_g_best.pt``), not the GAN checkpoint's last one."""
    from volgan.evaluation import compare_bundle_settings

    vols = write_cases(tmp_path / "vols", 4, depth=8)
    kw = dict(device="cpu", image_size=[32, 32], gen_channels=32, critic_channels=8, unet_channels=[8, 8, 8],
              gan_iterations=6, gan_val_interval=2, gan_val_patience=1, gan_val_samples=8, max_epochs=1,
              val_interval=2, patience_iterations=100, val_fraction=0.25, amp=False)
    mix = {"8-8 no aug": {"ratio": "8-8", "augment": False}}
    out = tmp_path / "cmp"
    compare_bundle_settings("wgan_pairs_seg_2d", str(vols), str(vols), out, mix, seeds=(0,), common=kw)
    src = out / "seed0" / "8-8_no_aug"
    # mark the kept generator, so that only a run that loads it can end with these weights
    marked = {k: torch.full_like(v, 0.01) if v.is_floating_point() else v
              for k, v in torch.load(src / "model_g_best.pt", weights_only=True).items()}
    torch.save(marked, src / "model_g_best.pt")
    compare_bundle_settings("wgan_pairs_seg_2d", str(vols), str(vols), out,
                            {**mix, "0-16 no aug": {"ratio": "0-16", "augment": False}}, seeds=(0,), common=kw)
    run = out / "seed0" / "0-16_no_aug"
    used = torch.load(run / "model_g.pt", weights_only=True)
    assert used.keys() == marked.keys() and all(torch.equal(used[k], marked[k]) for k in marked)
    assert (run / "gan_val_curve.csv").read_bytes() == (src / "gan_val_curve.csv").read_bytes()


def test_stopping_record_says_where_each_gan_was_best_and_whether_the_rule_stopped_it(tmp_path):
    from volgan.evaluation.report import read_curve, write_stopping_curves

    stopped, capped = tmp_path / "a.csv", tmp_path / "b.csv"
    stopped.write_text("epoch,iteration,val_mmd\n1,100,0.9\n2,200,0.4\n3,300,0.5\n4,400,0.6\n", encoding="utf-8")
    capped.write_text("epoch,iteration,val_mmd\n1,100,0.9\n2,200,0.7\n3,300,0.8\n4,400,0.3\n", encoding="utf-8")
    assert read_curve(stopped) == {"metric": "val_mmd", "epoch": [1, 2, 3, 4], "iteration": [100, 200, 300, 400],
                                   "value": [0.9, 0.4, 0.5, 0.6]}
    table = write_stopping_curves(tmp_path / "out", {"seed 0": stopped, "seed 1": capped}, "min", patience=2)
    rows = table.splitlines()[2:]
    assert rows == ["| seed 0 | 4 | 0.4000 | 200 | 400 | yes |",
                    "| seed 1 | 4 | 0.3000 | 400 | 400 | no: trained to its cap |"]
    assert (tmp_path / "out" / "gan_curves.png").stat().st_size > 0
    assert (tmp_path / "out" / "gan_curves.md").read_text(encoding="utf-8").strip() == table
    # the same curve read as higher-is-better has its best first and was stopped 3 validations later
    assert "| seed 0 | 4 | 0.9000 | 100 | 400 | yes |" in write_stopping_curves(tmp_path / "o2", {"seed 0": stopped},
                                                                               "max", patience=3)
