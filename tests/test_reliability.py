"""Reliability: kill -9 during training then resume, health warnings, no unsafe deserialisation in the code."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from ignite.engine import Engine

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


def test_sigkill_then_resume(tmp_path, tiny_dataset):
    folder, items = tiny_dataset
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "train.yaml"),
           "--bundle_root", str(BUNDLE), "--dataset_dir", str(folder), "--output_dir", str(out), "--max_epochs", "40",
           "--device", "cpu", "--patch_size", "[16,16,16]", "--gen_channels", "[4,8,16,32]",
           "--disc_channels", "[8,16,16]", "--log_interval", "100"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("checkpoint_*.pt"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # mid-run, possibly mid-write
    proc.wait()
    ckpts = sorted(out.glob("checkpoint_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    assert ckpts, "no checkpoint was written before the kill"
    for c in ckpts:  # never a truncated checkpoint: every file loads weights-only
        torch.load(c, weights_only=True)
    last = torch.load(ckpts[-1], weights_only=True)
    epoch = int(ckpts[-1].stem.split("_")[1])
    assert last["trainer"]["iteration"] == epoch * len(items)
    cmd[cmd.index("--max_epochs") + 1] = str(epoch + 1)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    resumed = torch.load(out / f"checkpoint_{epoch + 1}.pt", weights_only=True)
    assert resumed["trainer"]["iteration"] == (epoch + 1) * len(items)
    step = lambda c: float(next(iter(c["g_optimizer"]["state"].values()))["step"])  # noqa: E731
    assert step(resumed) == step(last) + len(items)
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
