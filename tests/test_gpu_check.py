"""benchmarks/gpu_check.py, the one-shot GPU check of issue #23, in its CPU form (``--device cpu --quick``): every
section runs and reports numbers, and a failure in one section is loud (exit status 1) without hiding the others.
No timing is asserted."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402

NUMBER = re.compile(r"^[+-]?[\d,]+(\.\d+)?( ?(%|x|ms.*))?$")


def _run(tmp_path, *extra):
    rc = gpu_check.main(["--output-dir", str(tmp_path), "--device", "cpu", "--quick", "--threads", "1", *extra])
    report = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    return rc, report, (tmp_path / "gpu_check.md").read_text(encoding="utf-8")


def _numbers(section) -> int:
    return sum(bool(NUMBER.match(c.strip())) for t in section["tables"] for row in t["rows"] for c in row)


def test_quick_cpu_check_runs_every_section_with_numbers(tmp_path):
    rc, report, md = _run(tmp_path)
    assert rc == 0 and report["failed"] == [], md
    assert list(report["sections"]) == list(gpu_check.SECTIONS.values())
    for name, sec in report["sections"].items():
        assert sec["status"] == "ok" and _numbers(sec) >= 2, (name, sec["tables"])
        assert f"{gpu_check.TITLES[name]} (ok," in md
    bundles = report["sections"]["bundles"]["data"]
    assert sorted(r["bundle"] for r in bundles) == sorted(gpu_check.bundle_runs())
    assert all(r["status"] == "pass" and r["outputs"] >= 1 for r in bundles)
    synthesis = {r["mode"]: r for r in report["sections"]["synthesis"]["data"]["rows"]}
    tiles = next(r for m, r in synthesis.items() if "tiles" in m)
    assert tiles["max_abs_diff"] < 1e-3  # volgan's tiles equal the one pass; MONAI's windows need not
    peaks = report["sections"]["mfu"]["data"]["peaks"]
    assert peaks["conv3d fp32"]["gflops"] > 0 and peaks["mm bf16"]["gflops"] > 0
    assert report["sections"]["sync"]["data"]["verdict"]


def test_a_failing_section_is_loud_and_the_others_still_report(tmp_path):
    # section a: an unknown bundle and a dtype volgan refuses (one row each); f: a patch the networks cannot take
    # (the whole section raises); d is unaffected and must still report
    rc, report, md = _run(tmp_path, "--sections", "a,f,d", "--bundles", "nope,mmgan_label2mri_3d", "--dtypes",
                          "float8", "--patch", "7")
    assert rc == 1
    assert report["failed"] == ["bundles", "sync"]
    rows = report["sections"]["bundles"]["data"]
    assert [r["status"] for r in rows] == ["FAIL", "FAIL"]
    assert "unknown bundle 'nope'" in rows[0]["error"]
    assert "amp_dtype must be float16 or bfloat16" in rows[1]["traceback"]  # the cause, under MONAI's wrapping
    assert "**FAIL**" in md and "**FAILED:" in md and "2 section(s) FAILED: bundles, sync" in md
    assert "Traceback" in report["sections"]["sync"]["traceback"]
    assert report["sections"]["synthesis"]["status"] == "ok" and _numbers(report["sections"]["synthesis"]) >= 2
