"""The demo end to end (quick budgets) and DDP training with torchrun on two CPU processes."""

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import BUNDLES, tiny_case, write_pair


def test_demo_quick(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "volgan", "demo", "--quick", "--output-dir", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| real only | 2 | 4 | 2 seeds |" in r.stdout and "| real + MM-GAN synthetic | 2 + 4 | 4 | 2 seeds |" in r.stdout
    assert "| real + standard augmentation | 2 | 4 | 2 seeds |" in r.stdout and "synthesis quality" in r.stdout
    assert "Difference to **real only**" in r.stdout and "| real + MM-GAN synthetic | 2 seeds x 4 cases |" in r.stdout
    assert "With 2 labelled cases, real + MM-GAN synthetic is " in r.stdout and "95 % CI" in r.stdout
    assert "volgan demo [1/5" in r.stderr  # progress lines when stderr is not a terminal
    assert (out / "figure.png").stat().st_size > 10_000
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert set(res["results"]) == {"real only", "real + standard augmentation", "real + MM-GAN synthetic"}
    assert res["comparison"]["real + MM-GAN synthetic"]["WT"]["verdict"] in ("better", "worse", "no detectable difference")
    from monai.data import load_decathlon_datalist

    assert len(load_decathlon_datalist(str(out / "synthetic" / "datalist.json"))) == 4
    # a second run replaces its own previous output, but never a folder it did not write
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "volgan", "demo", "--quick", "--output-dir", str(other)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "not empty" in r.stderr and (other / "keep.txt").exists()


def test_reading_says_each_verdict_as_it_is():
    from volgan.apps.demo import reading

    def c(verdict, mean=0.1):
        return {"WT": {"verdict": verdict, "mean": mean, "lo": mean - 0.05, "hi": mean + 0.05}}

    text = reading({"gan": c("better"), "aug": c("too few seeds or pairs to tell")}, "WT", "gan", "aug", 2)
    assert text.startswith("With 2 labelled cases, gan is better than real only (WT Dice +0.100, 95 % CI [+0.050, "
                           "+0.150])") and "aug is not comparable (too few seeds or pairs) with real only" in text
    text = reading({"gan": c("worse", -0.1), "aug": c("no detectable difference", 0.0)}, "WT", "gan", "aug", 4)
    assert "gan is worse than real only" in text and "aug is not detectably different from real only" in text


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_two_cpu_processes(tmp_path):
    import numpy as np

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.RandomState(0)
    for i in range(4):
        write_pair(data, f"c{i}", *tiny_case(rng, (16, 16, 16)))
    b = BUNDLES / "mmgan_label2mri_3d" / "configs"
    out = tmp_path / "out"
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", "29517", "-m", "monai.bundle", "run",
           "--config_file", f"['{b / 'train.yaml'}','{b / 'multi_gpu_train.yaml'}']", "--bundle_root", str(b.parent),
           "--dataset_dir", str(data), "--output_dir", str(out), "--max_epochs", "2", "--patch_size", "[16,16,16]",
           "--gen_channels", "[4,8,16,32]", "--disc_channels", "[8,16,16]"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    import torch

    ck = torch.load(out / "checkpoint_2.pt", weights_only=True)
    assert ck["trainer"]["iteration"] == 4  # 4 cases over 2 ranks: 2 iterations per epoch
    assert (out / "model.pt").is_file() and len(list((out / "logs").glob("events*"))) == 1
