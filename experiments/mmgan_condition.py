"""MM-GAN's condition (issue #20 item 5): the paper's brain-only label 3 vs tissue classes (CSF / grey matter /
white matter) plus the same tumour labels, each GAN trained to a stated criterion.

    python experiments/mmgan_condition.py --out runs/mmgan_condition [--seeds 0 1 2] [--max-epochs 60]
    python experiments/mmgan_condition.py ... --seeds 0 --train-only brain  # a share per process, then the table

Data: the embedded sample (``volgan.data.make_sample_cases``, real T1 anatomy of three subjects, SIMULATED
tumours); with ``tissue=True`` the same images get the rest of the brain split into CSF 5 / GM 6 / WM 7 by
``volgan.data.tissue_classes`` (multi-Otsu of the real T1). Train = the 8 cases of two subjects, held out = the 4
cases of Colin27. Each (condition, seed) trains ``mmgan_label2mri_3d`` with the held-out cases as its validation set:
every ``--val-interval`` epochs the generator synthesises the held-out volumes from their label maps and is scored
by SSIM against the real images (``OUT/<condition>/seed<k>/val_curve.csv``); training stops after
``--patience`` validations without a better SSIM, or at ``--max-epochs``. Each best generator is then scored once
more per held-out case by the bundle's own validator (the same preprocessing, sliding-window inferer and SSIM;
``OUT/<condition>/seed<k>/heldout_ssim.json``). The table: best held-out SSIM per condition (mean, 95 % bootstrap
interval over seeds and held-out cases), the paired difference tissue - brain-only per (seed, case) with its
interval and verdict, the epoch of the best and the epochs trained; the figure: SSIM curves.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from volgan.bundle import bundle_path, config_files, run_bundle
from volgan.data import load_datalist, make_sample_cases
from volgan.evaluation.report import format_interval, read_curve
from volgan.evaluation.statistics import paired_bootstrap, verdict
from volgan.io import atomic_write_json, load_weights

CONDITIONS = {"brain-only (label 3, P1)": dict(tissue=False, label_values=[0, 1, 2, 3, 4]),
              "tissue classes (CSF/GM/WM)": dict(tissue=True, label_values=[0, 1, 2, 4, 5, 6, 7])}


def per_case_ssim(run: Path, overrides: dict) -> list[float]:
    """SSIM of ``run``'s best generator (``model_best.pt``) on each held-out case, by the bundle's validator (the
    ``validate#evaluator`` of train.yaml with the run's overrides: what ``val_curve.csv`` averaged); cached in
    ``run/heldout_ssim.json``."""
    cache = run / "heldout_ssim.json"
    if cache.is_file():
        return json.loads(cache.read_text(encoding="utf-8"))["ssim"]
    from monai.bundle import ConfigWorkflow

    root = bundle_path("mmgan_label2mri_3d")
    with tempfile.TemporaryDirectory() as tmp:  # the validator's own best-model saver writes there, not into run
        wf = ConfigWorkflow(config_file=config_files("mmgan_label2mri_3d"), workflow_type="train",
                            meta_file=str(root / "configs" / "metadata.json"), bundle_root=str(root),
                            **{**overrides, "output_dir": tmp})
        wf.initialize()
        evaluator = wf.parser.get_parsed_content("validate#evaluator")
        load_weights(wf.parser.get_parsed_content("network"), run / "model_best.pt")
        evaluator.run()
        ssim = [float(v) for v in evaluator.state.metric_details["val_ssim"].reshape(-1)]
    atomic_write_json(cache, {"ssim": ssim, "mean": float(np.mean(ssim)), "model": "model_best.pt"})
    return ssim


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/mmgan_condition")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-epochs", type=int, default=60)
    p.add_argument("--val-interval", type=int, default=4)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--train-only", choices=["brain", "tissue"],
                   help="train (and score) this condition's GANs only, no table: a share of a run over processes")
    a = p.parse_args()
    logging.disable(logging.INFO)
    out = Path(a.out)
    results: dict[str, dict[int, dict]] = {}
    for name, cond in CONDITIONS.items():
        slug = "tissue" if cond["tissue"] else "brain"
        if a.train_only not in (None, slug):
            continue
        data = out / f"data_{slug}"
        items = load_datalist(data / "dataset.json" if (data / "dataset.json").is_file() else
                              make_sample_cases(data, 4, seed=0, tissue=cond["tissue"]))
        train = [it for it in items if it["subject"] != "colin27"]
        held_out = [it for it in items if it["subject"] == "colin27"]
        for seed in a.seeds:
            run = out / slug / f"seed{seed}"
            t0 = time.time()
            overrides = dict(dataset_dir=train, val_dataset_dir=held_out, output_dir=str(run), max_epochs=a.max_epochs,
                             val_interval=a.val_interval, val_patience=a.patience, label_values=cond["label_values"],
                             patch_size=[32, 32, 32], gen_channels=[16, 32, 64, 128], disc_channels=[32, 64, 128],
                             lambda_rec=0.0, log_interval=50, image_interval=10**6, seed=seed, device=a.device)
            if not (run / "finished").is_file():
                run_bundle("mmgan_label2mri_3d", "train", **overrides)
                (run / "finished").write_text(f"{time.time() - t0:.0f}\n", encoding="utf-8")
            c = read_curve(run / "val_curve.csv")
            epochs, ssim = c["epoch"], c["value"]
            best = int(np.argmax(ssim))
            results.setdefault(name, {})[seed] = {"epochs": epochs, "ssim": ssim, "best": ssim[best],
                                                  "best_epoch": epochs[best], "trained": epochs[-1],
                                                  "cases": per_case_ssim(run, overrides),
                                                  "seconds": float((run / "finished").read_text().strip() or 0)}
    if a.train_only:
        return
    names = list(CONDITIONS)
    n_cases = len(results[names[0]][a.seeds[0]]["cases"])
    lines = [f"Held-out SSIM (Colin27, {n_cases} cases, whole volumes) of MM-GAN's best validation; mean [95 % "
             f"bootstrap interval over {len(a.seeds)} seeds x {n_cases} held-out cases]; stop after {a.patience} "
             f"validations (every {a.val_interval} epochs) without a better SSIM, at most {a.max_epochs} epochs.", "",
             "| condition | best SSIM | Δ vs brain-only [95 % CI] | verdict | best epoch | epochs trained | train s |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for name in names:
        r = results[name]
        best = np.array([r[s]["cases"] for s in a.seeds])  # seeds x held-out cases
        ci = paired_bootstrap(best)
        delta, verd = "reference", ""
        if name != names[0]:
            d = paired_bootstrap(best - np.array([results[names[0]][s]["cases"] for s in a.seeds]))
            delta, verd = format_interval(d, signed=True), verdict(d)
        lines.append(f"| {name} | {format_interval(ci)} | {delta} | {verd} | "
                     f"{np.mean([r[s]['best_epoch'] for s in a.seeds]):.0f} | "
                     f"{np.mean([r[s]['trained'] for s in a.seeds]):.0f} | "
                     f"{np.mean([r[s]['seconds'] for s in a.seeds]):.0f} |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    for i, name in enumerate(names):
        for j, s in enumerate(a.seeds):
            r = results[name][s]
            ax.plot(r["epochs"], r["ssim"], color=f"C{i}", marker="o", ms=3, alpha=0.8, label=name if j == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out SSIM")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "ssim_curves.png", dpi=100)
    print(table)


if __name__ == "__main__":
    main()
