"""The benchmark scripts run (quick sizes); no timing is asserted."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_mmgan_quick_prints_tables():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_mmgan.py"), "--quick", "--device", "cpu"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| 16^3 |" in r.stdout and "| whole volume |" in r.stdout and "failed" not in r.stdout
