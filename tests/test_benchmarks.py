"""The benchmark scripts run (quick sizes); no timing is asserted."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_mmgan_quick_prints_tables():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_mmgan.py"), "--quick", "--device", "cpu"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| 16^3 |" in r.stdout and "bench_seams.py" in r.stdout and "failed" not in r.stdout


def test_bench_seams_quick_prints_before_and_after(tmp_path):
    fig = tmp_path / "seams.png"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_seams.py"), "--quick", "--device", "cpu",
                        "--figure", str(fig)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in r.stdout.splitlines() if line.startswith("| ")}
    assert ("before (P1)", "windows 24^3, overlap 0.25") in rows and ("after (volgan)", "tiles 24^3") in rows
    assert "failed" not in r.stdout and fig.stat().st_size > 10000
    tiled = rows[("after (volgan)", "tiles 24^3")].split("|")
    assert float(tiled[7]) < 0.05  # max abs diff of tiles to one pass (the table's 7th column)


def test_bench_training_quick_prints_every_table():
    # one thread: a smoke test on a shared CI machine; two OpenMP threads on two busy cores stall on barriers
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--quick", "--device", "cpu",
                        "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout
    assert "failed" not in out, out
    for header in (
        "| method | patch | batch | bare loop ms/it | volgan ms/it | engine overhead |",
        "| method | patch | batch | variant | ms/it | speed-up vs fp32 |",
        "| loader | dataset build s | loader alone ms/batch | train step ms | data wait ms/step |",
        "| patch (batch 1) | voxels | ms/it | spread | voxels/s | local time exponent |",
        "| batch | ms/it | spread | time vs batch 1 |",
        "| variant | patch | ms/it | power its per G layer per it | power its per D layer per it | vs no SN |",
    ):
        assert header in out, header
    for method in ("ConditionalGanTrainer", "CycleShapeTrainer", "WganGpTrainer", "PairCriticWganGpTrainer"):
        assert f"`{method}`" in out, method
    # the trainer's spectral norm: one power iteration per optimiser step (G 1 + D 2 per iteration), 3 per D before
    assert "| SN, one power iteration per optimiser step (volgan) | 16^3 |" in out and "| 1 | 2 |" in out and "| 1 | 3 |" in out
    assert "| CacheDataset + ThreadDataLoader |" in out and "bf16 autocast" in out and "fitted exponent" in out


def test_bench_training_rejects_unknown_section():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_training.py"), "--sections", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "unknown section" in r.stderr


def _bench_module(name):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import importlib

    return importlib.import_module(name)


def test_bench_peers_quick_prints_ratios_with_spread(capsys):
    _bench_module("bench_peers").main(["--quick", "--threads", "1"])
    out = capsys.readouterr().out
    assert "failed" not in out, out
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| P")]
    assert [r[1].strip().split(":")[0] for r in rows] == ["P5 WGAN-GP", "P2 cycle/shape joint step"]
    for r in rows:  # median ratio and its min .. max over the repeats
        lo, hi = (float(x) for x in r[7].split(".."))
        assert lo <= float(r[6]) <= hi and int(r[8]) == 2


def test_bench_flops_quick_counts_the_gradient_penalty_and_fits_slopes(capsys):
    _bench_module("bench_flops").main(["--quick", "--sections", "peak,mfu,scaling", "--methods", "wgan_p5",
                                       "--threads", "1"])
    out = capsys.readouterr().out
    assert "failed" not in out, out
    assert "| conv3d | fp32 |" in out and "| WGAN-GP pairs (P5) | 32^2 | 2 | fp32 |" in out
    assert "training (MM-GAN trainer, G+D step): time ~ voxels^" in out and "synthesis (G forward" in out
