"""Regenerate every table and figure of ``docs/results.md`` (issue #10) from a clean clone with ``../shared/data``
beside it:

    python experiments/reproduce.py --data ../shared/data --out runs [--only p1 p3]
    python experiments/reproduce.py --smoke --out /tmp/smoke     # every experiment at toy scale, minutes


Runs each experiment with the settings the report states (each is resumable: finished settings are not re-run),
then rewrites the blocks between ``<!-- table:NAME -->`` and ``<!-- /table:NAME -->`` in docs/results.md with
the freshly written tables and copies the figures to docs/figures/. The prose around the tables is written by
people and says what the numbers mean; re-read it when the numbers change.

``--smoke`` runs the same commands with toy budgets (one seed, one epoch or a few iterations, small images) and
writes the report to ``OUT/results.md`` and ``OUT/figures/`` instead of ``docs/``: a check that the one command
goes through end to end, not a result.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

#: name -> (command, table file written by the run, figure files to copy)
EXPERIMENTS = {
    "p1": (["experiments/mmgan_brain.py", "--out", "{out}/mmgan_brain", "--seeds", "0", "1", "2", "--curve-seeds",
            "0", "1", "2", "--curve-sizes", "1", "2", "4", "8", "--curve-gan-iterations", "64", "--curve-seg-iterations",
            "100"],
           ["{out}/mmgan_brain/comparison/results.md", "{out}/mmgan_brain/learning_curve/learning_curve.md"],
           ["{out}/mmgan_brain/comparison/dice.png", "{out}/mmgan_brain/learning_curve/learning_curve.png"]),
    # MM-GAN's condition (#20 item 5): brain-only label 3 vs tissue classes, each GAN stopped by held-out SSIM
    "p1t": (["experiments/mmgan_condition.py", "--out", "{out}/mmgan_condition", "--seeds", "0", "1", "2",
             "--max-epochs", "16", "--val-interval", "4", "--patience", "2"],
            ["{out}/mmgan_condition/table.md"], ["{out}/mmgan_condition/ssim_curves.png"]),
    # the same two conditions trained until the stopping rule fires (at most 80 epochs, patience 3 validations)
    "p1s": (["experiments/mmgan_condition.py", "--out", "{out}/mmgan_condition_long", "--seeds", "0", "1", "2",
             "--max-epochs", "80", "--val-interval", "4", "--patience", "3"],
            ["{out}/mmgan_condition_long/table.md"], ["{out}/mmgan_condition_long/ssim_curves.png"]),
    # P1's comparison with every MM-GAN trained to the stopping criterion (#20 item 4): one case per training
    # subject held out of the GAN's training, SSIM every 4 epochs, stopped 3 validations after the best, <= 80 epochs
    "p1g": (["experiments/mmgan_brain.py", "--out", "{out}/mmgan_brain_stop", "--seeds", "0", "1", "2", "--skip-curve",
             "--gan-epochs", "80", "--gan-val-cases", "2", "--gan-val-interval", "4", "--gan-patience", "3"],
            ["{out}/mmgan_brain_stop/comparison/results.md", "{out}/mmgan_brain_stop/comparison/gan_curves.md"],
            ["{out}/mmgan_brain_stop/comparison/dice.png", "{out}/mmgan_brain_stop/comparison/gan_curves.png"]),
    "p2": (["experiments/cycleshape_abdomen.py", "--data", "{data}", "--out", "{out}/cycleshape_abdomen", "--seeds",
            "0", "1", "2"],
           ["{out}/cycleshape_abdomen/table.md"], []),
    "p3": (["experiments/slicewise_liver.py", "--method", "p3", "--data", "{data}", "--out", "{out}/liver", "--size",
            "128", "--gan-epochs", "100", "--seg-epochs", "100", "--seeds", "0", "1", "2"],
           ["{out}/liver/p3/results.md"], ["{out}/liver/p3/dice.png"]),
    # P3 with every GAN (the offline one and ours' joint one) stopped by held-out SSIM: every 10 epochs, patience 3
    "p3s": (["experiments/slicewise_liver.py", "--method", "p3", "--data", "{data}", "--out", "{out}/liver_stop",
             "--size", "128", "--gan-epochs", "100", "--gan-val-interval", "10", "--gan-val-patience", "3",
             "--seg-epochs", "100", "--seeds", "0", "1", "2"],
            ["{out}/liver_stop/p3/results.md", "{out}/liver_stop/p3/gan_curves.md"],
            ["{out}/liver_stop/p3/dice.png", "{out}/liver_stop/p3/gan_curves.png"]),
    # the same with the cap at 300 epochs (the rule never fired within 100), the settings that use the offline GAN
    "p3l": (["experiments/slicewise_liver.py", "--method", "p3", "--data", "{data}", "--out", "{out}/liver_stop300",
             "--size", "128", "--gan-epochs", "300", "--gan-val-interval", "10", "--gan-val-patience", "3",
             "--seg-epochs", "100", "--settings", "real_only", "gan_mix", "elastic_gan_mix", "gan_pretrain",
             "--seeds", "0", "1", "2"],
            ["{out}/liver_stop300/p3/results.md", "{out}/liver_stop300/p3/gan_curves.md"],
            ["{out}/liver_stop300/p3/dice.png", "{out}/liver_stop300/p3/gan_curves.png"]),
    "p5": (["experiments/slicewise_liver.py", "--method", "p5", "--data", "{data}", "--out", "{out}/liver", "--size",
            "64", "--gan-iterations", "1000", "--unet-epochs", "600", "--seeds", "0", "1", "2"],
           ["{out}/liver/p5/results.md"], ["{out}/liver/p5/dice.png"]),
    # P5 with every WGAN-GP trained to the stopping criterion (#20 item 4): MMD to the validation slices every 250
    # iterations, stopped 4 validations after the lowest, at most the paper's 10,000 iterations
    "p5s": (["experiments/slicewise_liver.py", "--method", "p5", "--data", "{data}", "--out", "{out}/liver_stop",
             "--size", "64", "--gan-iterations", "10000", "--gan-val-interval", "250", "--gan-val-patience", "4",
             "--unet-epochs", "600", "--seeds", "0", "1", "2"],
            ["{out}/liver_stop/p5/results.md", "{out}/liver_stop/p5/gan_curves.md"],
            ["{out}/liver_stop/p5/dice.png", "{out}/liver_stop/p5/gan_curves.png"]),
    "p4": (["experiments/slicewise_liver.py", "--method", "p4", "--data", "{data}", "--out", "{out}/liver", "--size",
            "64", "--gan-iterations", "400", "--unet-epochs", "600", "--seeds", "0", "1", "2"],
           ["{out}/liver/p4/results.md"], ["{out}/liver/p4/dice.png"]),
    # P4 with every augmenter GAN trained to the stopping criterion: MMD every 100 iterations, patience 3, <= 1200
    "p4s": (["experiments/slicewise_liver.py", "--method", "p4", "--data", "{data}", "--out", "{out}/liver_stop",
             "--size", "64", "--gan-iterations", "1200", "--gan-val-interval", "100", "--gan-val-patience", "3",
             "--unet-epochs", "600", "--seeds", "0", "1", "2"],
            ["{out}/liver_stop/p4/results.md", "{out}/liver_stop/p4/gan_curves.md"],
            ["{out}/liver_stop/p4/dice.png", "{out}/liver_stop/p4/gan_curves.png"]),
    # the low-data regime of the 2D methods (#20): 1, 2, 4, 8 training liver slices, 3 seeds
    "p3c": (["experiments/slicewise_liver.py", "--method", "p3", "--data", "{data}", "--out", "{out}/liver", "--size",
             "64", "--gan-epochs", "60", "--seg-epochs", "60", "--seeds", "0", "1", "2", "--sizes", "1", "2", "4", "8"],
            ["{out}/liver/p3/learning_curve/learning_curve.md"], ["{out}/liver/p3/learning_curve/learning_curve.png"]),
    "p5c": (["experiments/slicewise_liver.py", "--method", "p5", "--data", "{data}", "--out", "{out}/liver", "--size",
             "64", "--gan-iterations", "1000", "--unet-epochs", "600", "--seeds", "0", "1", "2", "--sizes", "1", "2",
             "4", "8"],
            ["{out}/liver/p5/learning_curve/learning_curve.md"], ["{out}/liver/p5/learning_curve/learning_curve.png"]),
}


#: --smoke: option -> values replacing the report's budgets (the tables it writes are not results)
SMOKE = {
    "p1": {"--gan-epochs": ["1"], "--seg-iterations": ["2"], "--seeds": ["0"], "--curve-seeds": ["0"],
           "--curve-sizes": ["1", "2"], "--curve-gan-iterations": ["2"], "--curve-seg-iterations": ["2"]},
    "p1g": {"--gan-epochs": ["2"], "--seg-iterations": ["2"], "--seeds": ["0"], "--gan-val-interval": ["1"],
            "--gan-patience": ["1"]},
    "p2": {"--epochs": ["1", "1", "1"], "--seeds": ["0"]},
    "p3": {"--size": ["32"], "--gan-epochs": ["1"], "--seg-epochs": ["1"], "--seeds": ["0"]},
    "p3s": {"--size": ["32"], "--gan-epochs": ["2"], "--gan-val-interval": ["1"], "--gan-val-patience": ["1"],
            "--seg-epochs": ["1"], "--seeds": ["0"]},
    "p3l": {"--size": ["32"], "--gan-epochs": ["2"], "--gan-val-interval": ["1"], "--gan-val-patience": ["1"],
            "--seg-epochs": ["1"], "--seeds": ["0"]},
    "p5": {"--size": ["32"], "--gan-iterations": ["2"], "--unet-epochs": ["1"], "--seeds": ["0"]},
    "p4": {"--size": ["32"], "--gan-iterations": ["2"], "--unet-epochs": ["1"], "--seeds": ["0"]},
    "p5s": {"--size": ["32"], "--gan-iterations": ["4"], "--gan-val-interval": ["2"], "--gan-val-patience": ["1"],
            "--unet-epochs": ["1"], "--seeds": ["0"]},
    "p4s": {"--size": ["32"], "--gan-iterations": ["4"], "--gan-val-interval": ["2"], "--gan-val-patience": ["1"],
            "--unet-epochs": ["1"], "--seeds": ["0"]},
    "p1t": {"--seeds": ["0"], "--max-epochs": ["1"], "--val-interval": ["1"]},
    "p1s": {"--seeds": ["0"], "--max-epochs": ["2"], "--val-interval": ["1"], "--patience": ["1"]},
    "p3c": {"--size": ["32"], "--gan-epochs": ["1"], "--seg-epochs": ["1"], "--seeds": ["0"], "--sizes": ["1", "2"]},
    "p5c": {"--size": ["32"], "--gan-iterations": ["2"], "--unet-epochs": ["1"], "--seeds": ["0"], "--sizes": ["1", "2"]},
}


def with_options(cmd: list[str], options: dict[str, list[str]]) -> list[str]:
    """``cmd`` with the values of each option in ``options`` replaced (the option appended when absent)."""
    out, k, seen = [], 0, set()
    while k < len(cmd):
        tok = cmd[k]
        out.append(tok)
        k += 1
        if tok in options:
            seen.add(tok)
            out += options[tok]
            while k < len(cmd) and not cmd[k].startswith("--"):
                k += 1
    for opt, vals in options.items():
        if opt not in seen:
            out += [opt, *vals]
    return out


def table_of(md: str) -> str:
    """The Markdown table(s) of a results file (the lines starting with '|'), a blank line between two tables and
    the sentence that introduces each table after the first (e.g. what the difference table's intervals are)."""
    blocks, lines = [], md.splitlines()
    for k, line in enumerate(lines):
        if not line.startswith("|"):
            continue
        if k == 0 or not lines[k - 1].startswith("|"):  # a table starts
            intro = next((x for x in reversed(lines[:k]) if x.strip()), "") if blocks else ""
            blocks.append([intro, ""] if intro and not intro.startswith("|") else [])
        blocks[-1].append(line)
    return "\n\n".join("\n".join(b) for b in blocks)


def fill_table(text: str, tag: str, table: str) -> str:
    """``text`` with the block between ``<!-- table:TAG -->`` and ``<!-- /table:TAG -->`` (filled or empty) set to
    ``table``."""
    pattern = re.compile(rf"(<!-- table:{re.escape(tag)} -->\n)(?:.*?\n)?(<!-- /table:{re.escape(tag)} -->)", re.S)
    return pattern.sub(lambda m: m.group(1) + table + "\n" + m.group(2), text)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="runs")
    p.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS))
    p.add_argument("--report-only", action="store_true", help="only rewrite docs/results.md from existing runs")
    p.add_argument("--smoke", action="store_true", help="toy budgets; report to OUT/results.md, not docs/")
    p.add_argument("--threads", type=int, help="OMP/MKL threads per experiment process; CPU results are bitwise "
                   "reproducible only for the same thread count and torch build (the report says which it used)")
    a = p.parse_args()
    env = dict(os.environ)
    if a.threads:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    fmt = {"data": str(Path(a.data).resolve()), "out": str(Path(a.out).resolve())}
    report = ROOT / "docs" / "results.md"
    text = report.read_text(encoding="utf-8")
    if a.smoke:
        report = Path(fmt["out"]) / "results.md"
    figures_dir = report.parent / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for name in a.only or EXPERIMENTS:
        cmd, tables, figures = EXPERIMENTS[name]
        if a.smoke:
            cmd = with_options(cmd, SMOKE[name])
        if not a.report_only:
            t0 = time.time()
            subprocess.run([PY, *[c.format(**fmt) for c in cmd]], cwd=ROOT, check=True, env=env)
            print(f"{name}: {time.time() - t0:.0f} s")
        for k, path in enumerate(tables):
            f = Path(path.format(**fmt))
            if not f.is_file():
                print(f"{name}: {f} missing, table left as it is")
                continue
            tag = name if k == 0 else f"{name}_{k}"
            text = fill_table(text, tag, table_of(f.read_text(encoding="utf-8")))
        for fig in figures:
            f = Path(fig.format(**fmt))
            if f.is_file():
                shutil.copyfile(f, figures_dir / f"{name}_{f.name}")
    report.write_text(text, encoding="utf-8")
    print(f"wrote {report}")


if __name__ == "__main__":
    main()
