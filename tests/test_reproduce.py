"""experiments/reproduce.py (#10): the one command behind docs/results.md, its --smoke mode and the table rewrite."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import reproduce  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"


def test_with_options_replaces_values_and_appends_missing_options():
    cmd = ["x.py", "--out", "o", "--seeds", "0", "1", "--size", "128"]
    got = reproduce.with_options(cmd, {"--seeds": ["0"], "--size": ["32"], "--epochs": ["1", "1"]})
    assert got == ["x.py", "--out", "o", "--seeds", "0", "--size", "32", "--epochs", "1", "1"]
    for name, (cmd, _, _) in reproduce.EXPERIMENTS.items():  # every smoke option is one the script has
        script = (ROOT / cmd[0]).read_text(encoding="utf-8")
        assert all(f'"{opt}"' in script for opt in reproduce.SMOKE[name]), name


def test_table_of_keeps_two_tables_apart_with_the_second_ones_intro():
    md = ("# title\n\nintro of the first\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nDifference to **x**, intervals:\n\n"
          "| setting | Δ |\n|---|---|\n| y | +0.1 |\n")
    assert reproduce.table_of(md) == ("| a | b |\n|---|---|\n| 1 | 2 |\n\nDifference to **x**, intervals:\n\n"
                                      "| setting | Δ |\n|---|---|\n| y | +0.1 |")
    assert reproduce.table_of("text only\n") == ""


def test_fill_table_sets_an_empty_or_a_filled_block_and_leaves_the_rest():
    text = "a\n<!-- table:p1 -->\n| old |\n|---|\n<!-- /table:p1 -->\nb\n<!-- table:p1s -->\n<!-- /table:p1s -->\nc\n"
    got = reproduce.fill_table(reproduce.fill_table(text, "p1s", "| new |"), "p1", "| x |\n| y |")
    assert got == "a\n<!-- table:p1 -->\n| x |\n| y |\n<!-- /table:p1 -->\nb\n<!-- table:p1s -->\n| new |\n" \
                  "<!-- /table:p1s -->\nc\n"
    assert reproduce.fill_table(got, "p1", "| x |\n| y |") == got  # idempotent


def test_report_only_smoke_rewrites_the_tables_of_a_copy_not_docs(tmp_path):
    """The table blocks of docs/results.md are replaced by the tables the runs wrote (here: P1's two files),
    the figures copied; with --smoke the report goes to OUT/results.md and docs/ is left alone."""
    docs = (ROOT / "docs" / "results.md").read_text(encoding="utf-8")
    comp, lc = tmp_path / "mmgan_brain" / "comparison", tmp_path / "mmgan_brain" / "learning_curve"
    comp.mkdir(parents=True)
    lc.mkdir(parents=True)
    (comp / "results.md").write_text("# t\n\n| setting | WT |\n|---|---:|\n| real | 0.123 |\n\nnot-a-table-line\n")
    (lc / "learning_curve.md").write_text("| cases | real |\n|---|---:|\n| 1 | 0.456 |\n")
    (comp / "dice.png").write_bytes(b"png")
    subprocess.run([sys.executable, str(ROOT / "experiments" / "reproduce.py"), "--smoke", "--report-only", "--only",
                    "p1", "--out", str(tmp_path)], check=True, cwd=ROOT, capture_output=True)
    out = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert "<!-- table:p1 -->\n| setting | WT |\n|---|---:|\n| real | 0.123 |\n<!-- /table:p1 -->" in out
    assert "<!-- table:p1_1 -->\n| cases | real |\n|---|---:|\n| 1 | 0.456 |\n<!-- /table:p1_1 -->" in out
    assert "not-a-table-line" not in out and (tmp_path / "figures" / "p1_dice.png").read_bytes() == b"png"
    assert (ROOT / "docs" / "results.md").read_text(encoding="utf-8") == docs


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "ct_mr_abdomen_totalseg").is_dir(), reason="needs ../shared/data")
def test_smoke_runs_every_experiment_end_to_end(tmp_path):
    """All five experiments through the one command at toy budgets (about 3 min on 2 idle cores)."""
    subprocess.run([sys.executable, str(ROOT / "experiments" / "reproduce.py"), "--smoke", "--data",
                    str(SHARED_DATA), "--out", str(tmp_path)], check=True, cwd=ROOT)
    out = (tmp_path / "results.md").read_text(encoding="utf-8")
    for name in ("p1", "p1_1", "p2", "p3", "p5", "p4"):
        block = out.split(f"<!-- table:{name} -->\n")[1].split(f"\n<!-- /table:{name} -->")[0]
        assert block.startswith("|") and block.count("\n") >= 2, name
