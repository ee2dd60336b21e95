"""Reliability: kill -9 during training then resume, health warnings, no unsafe deserialisation in the code."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Engine, Events

from volgan.handlers import GanHealthMonitor

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / "bundles" / "mmgan_label2mri_3d"


def test_no_unsafe_deserialisation_in_the_package():
    offenders = []
    for path in (ROOT / "volgan").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*import pickle|pickle\.load", text, re.M):
            offenders.append(f"{path}: pickle")
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                offenders.append(f"{path}: {m.group(0)}")
    assert not offenders, offenders


def _same(a, b) -> bool:
    """Recursive equality of checkpoint states (tensors bitwise)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and set(a) == set(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _epochs(out):
    return sorted(int(p.stem.split("_")[1]) for p in out.glob("checkpoint_*.pt"))


KILLS = 3


def test_sigkill_three_times_then_resume_restores_every_state(tmp_path, tiny_dataset):
    """Kill -9 a training KILLS times (at a checkpoint write or just after it), restarting it each time: no
    checkpoint is ever truncated, each restart continues from the newest complete one, and a resumed trainer holds
    exactly the checkpoint's counters, networks, optimisers, GradScalers, LR schedulers and image pool."""
    from monai.bundle import ConfigParser

    folder, items = tiny_dataset
    out = tmp_path / "run"
    overrides = dict(dataset_dir=str(folder), output_dir=str(out), device="cpu", patch_size=[16, 16, 16],
                     gen_channels=[4, 8, 16, 32], disc_channels=[8, 16, 16], log_interval=100, n_saved=2)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "train.yaml"),
           "--bundle_root", str(BUNDLE), "--max_epochs", "200"]
    for k, v in overrides.items():
        cmd += [f"--{k}", str(v).replace(" ", "")]
    newest, survived = 0, 0
    for kill in range(KILLS):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and (not _epochs(out) or _epochs(out)[-1] < newest + 2):
            time.sleep(0.02)
        time.sleep(0.05 * kill)  # mid-write, or a moment after it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        epochs = _epochs(out)
        assert epochs and epochs[-1] >= newest + 2, f"kill {kill}: training did not move on from epoch {newest}"
        for e in epochs:  # never a truncated checkpoint: every file loads weights-only, counters consistent
            ck = torch.load(out / f"checkpoint_{e}.pt", weights_only=True)
            assert ck["trainer"]["iteration"] == e * len(items)
        assert len(epochs) <= 2 + 1  # n_saved, plus at most the one being replaced when killed
        newest = epochs[-1]
        survived += 1
    assert survived == KILLS

    last = torch.load(out / f"checkpoint_{newest}.pt", weights_only=True)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update(dict(bundle_root=str(BUNDLE), max_epochs=200, amp=False, **overrides))  # the killed command
    parser.get_parsed_content("initialize")
    trainer = parser.get_parsed_content("train#trainer")
    engine = trainer.stage("train").trainer
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: e.terminate())  # stop before the first new step
    trainer.run()  # loads the newest checkpoint at STARTED
    assert trainer.resumed_from["train"].name == f"checkpoint_{newest}.pt"
    assert engine.state.iteration == newest * len(items)
    for key in ("generator", "discriminator", "g_optimizer", "d_optimizer", "g_scheduler", "d_scheduler",
                "g_scaler", "d_scaler", "pool"):
        assert _same(parser.get_parsed_content(f"train#checkpoint_dict#{key}").state_dict(), last[key]), key
    assert len(last["pool"]["images"]) == 4  # a full pool (size 4) came back as it was
    assert not list(out.glob(".checkpoint_*.tmp"))


def test_health_monitor_warns_on_domination_and_collapse():
    outputs = iter([{"d_real": torch.tensor(1.0), "d_fake": torch.tensor(0.0), "fake": torch.zeros(1, 1, 4, 4, 4)}] * 6)
    engine = Engine(lambda e, b: next(outputs))
    GanHealthMonitor(interval=1, patience=3).attach(engine)
    engine.run([0] * 6, max_epochs=1)
    assert any("discriminator domination" in w for w in engine.state.gan_warnings)
    assert any("mode collapse" in w for w in engine.state.gan_warnings)
    assert len(engine.state.gan_warnings) == 2  # once per episode


def test_checkpoints_of_an_earlier_run_are_pruned_too(tmp_path):
    """The last K are kept across restarts: a resumed run also removes the older checkpoints a killed run left."""
    from volgan.handlers import CheckpointHandler

    for k in (1, 2, 3, 10, 11):
        (tmp_path / f"checkpoint_{k}.pt").write_bytes(b"x")
    (tmp_path / "best_metric=0.5.pt").write_bytes(b"x")
    CheckpointHandler(tmp_path, {}, n_saved=2).prune()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_metric=0.5.pt", "checkpoint_10.pt", "checkpoint_11.pt"]
