"""``volgan demo``: "does synthetic data help on my data?" answered in miniature, in under 5 minutes on 2 CPU cores.

1. Materialise the sample cases (real T1 anatomy with simulated tumours, see ``volgan.data.samples``); the
   low-data regime where synthetic data can matter: 2 labelled training cases (one per training subject), the
   held-out subject's 4 cases for testing.
2. Train MM-GAN on the 2 labelled cases with the bundle ``mmgan_label2mri_3d`` (``train.yaml``).
3. Synthesise new pairs from perturbed versions of their label maps (``inference.yaml``), and images from the
   test label maps (the synthesis-quality measure).
4. Train the same small 3D U-Net with 3 seeds on real only, real + standard augmentation (the cheapest strong
   baseline) and real + MM-GAN synthetic pairs (``volgan.evaluation.compare_segmentation``); Dice per label on the
   held-out subject; each setting's paired difference to real only with a bootstrap 95 % interval over test cases
   and seeds, and a verdict that is "better" / "worse" only when the interval excludes 0
   (``volgan.evaluation.statistics``); print the table and one sentence reading it; write ``results.md`` /
   ``results.json`` and ``figure.png``.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure  # no pyplot: the caller's backend (e.g. Jupyter's inline) stays as it is
from matplotlib.patches import Patch
from tqdm.auto import tqdm

from volgan.bundle import run_bundle
from volgan.data import load_datalist, make_sample_cases
from volgan.errors import VolganConfigError
from volgan.evaluation import BRATS_REGIONS, compare_segmentation, evaluation_unet, synthesis_quality, write_report
from volgan.evaluation.harness import segmentor_weights
from volgan.evaluation.quality import foreground_zscores
from volgan.evaluation.report import aggregate, format_table, single_run
from volgan.evaluation.statistics import BETTER, TOO_FEW, WORSE
from volgan.io import load_weights
from volgan.synthesis import synthesize_augmentations

__all__ = ["DemoSettings", "run_demo"]

MARKER = ".volgan-demo"


class DemoSettings:
    """Sizes of the demo; ``quick`` is for the test suite (tiny budgets, same code path)."""

    def __init__(self, quick: bool = False, seed: int = 0):
        self.seed = seed
        self.cases_per_subject = 4
        self.test_subject = "colin27"
        self.labelled_per_subject = 1  # the scarce regime: 2 labelled training cases
        self.patch = [32, 32, 32]
        self.roi = [64, 64, 64]  # whole sample volumes fit in one tile
        self.gan_epochs = 2 if quick else 40  # 80 generator steps on the 2 cases (the 5-minute budget)
        self.gen_channels = [8, 16, 32, 64] if quick else [16, 32, 64, 128]
        self.disc_channels = [16, 32, 64] if quick else [32, 64, 128]
        self.synth_per_case = 2 if quick else 4
        self.seg_seeds = (0, 1) if quick else (0, 1, 2)
        self.seg_iterations = 6 if quick else 100
        self.seg_lr, self.seg_betas = 2e-3, (0.9, 0.999)  # a short budget: faster than the paper's 2e-4 / (0.5, 0.999)
        self.seg_channels = [8, 16, 32, 64] if quick else [16, 32, 64, 128]
        self.lambda_rec = 0.0


def _prepare_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if (out / MARKER).exists() or overwrite:
            shutil.rmtree(out)
        else:
            raise VolganConfigError(f"{out} is not empty and is not a previous demo output; choose another --output-dir")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by volgan demo; the next demo run may delete this folder\n", encoding="utf-8")


LABEL_NAMES = {1: "necrosis (1)", 2: "oedema (2)", 3: "rest of brain (3)", 4: "enhancing (4)"}
LABEL_COLOURS = {1: "#d62728", 2: "#2ca02c", 3: "#9b9b9b", 4: "#ffbf00"}


def _figure(path: Path, real_items, synth_items, n: int = 3) -> None:
    """Label map, real and synthetic image of ``n`` test cases, the images on one scale (z-scores inside the
    brain, -3..3: real and synthetic intensities are on different raw scales), with a label legend."""
    n = min(n, len(real_items), len(synth_items))
    fig = Figure(figsize=(9, 3 * n + 0.6))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        lab = np.asarray(nib.load(real_items[i]["label"]).dataobj)
        img = foreground_zscores(real_items[i]["image"], real_items[i]["label"])[0]
        syn = foreground_zscores(synth_items[i]["image"], synth_items[i]["label"])[0]
        lesion = np.argwhere(np.isin(lab, [1, 2, 4]))
        z = int(lesion[:, 2].mean()) if len(lesion) else lab.shape[2] // 2
        case = Path(real_items[i]["label"]).name.replace("_label.nii.gz", "")
        rgb = np.ones(lab.shape[:2] + (3,))
        for v, c in LABEL_COLOURS.items():
            rgb[lab[:, :, z] == v] = [int(c[k:k + 2], 16) / 255 for k in (1, 3, 5)]
        axes[i, 0].imshow(np.transpose(rgb, (1, 0, 2)), origin="lower", interpolation="nearest")
        for ax, data, title in ((axes[i, 1], img, "real image"), (axes[i, 2], syn, "synthetic image")):
            ax.imshow(data[:, :, z].T, origin="lower", cmap="gray", vmin=-3, vmax=3, interpolation="nearest")
            ax.set_title(f"{case}: {title} (z-score, z={z})", fontsize=8)
        axes[i, 0].set_title(f"{case}: label map (z={z})", fontsize=8)
        for ax in axes[i]:
            ax.axis("off")
    fig.legend(handles=[Patch(color=c, label=LABEL_NAMES[v]) for v, c in LABEL_COLOURS.items()], loc="lower center",
               ncol=4, fontsize=8, frameon=False)
    fig.suptitle("MM-GAN demo: real anatomy with SIMULATED tumours; synthetic image from the same label map",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)


def reading(comparison: dict, metric: str, gan: str, aug: str, n_real: int) -> str:
    """One sentence reading the result, whichever way it came out."""
    def said(name: str) -> str:
        c = comparison[name][metric]
        words = {BETTER: "better than", WORSE: "worse than",
                 TOO_FEW: "not comparable (too few seeds or pairs) with"}
        word = words.get(c["verdict"], "not detectably different from")
        return f"{name} is {word} real only ({metric} Dice {c['mean']:+.3f}, 95 % CI [{c['lo']:+.3f}, {c['hi']:+.3f}])"

    return (f"With {n_real} labelled cases, {said(gan)}; {said(aug)}. The intervals are over the test cases and the "
            "U-Net seeds of one MM-GAN training; a GAN trained longer (the paper: 200 epochs) or on a GPU, more "
            "labelled cases or real tumours can change this, and on simulated tumours it says the pipeline works, "
            "not what MM-GAN achieves on BraTS.")


def run_demo(output_dir: str | Path = "volgan-demo", quick: bool = False, device: Any = "cpu", seed: int = 0,
             overwrite: bool = False) -> dict[str, Any]:
    """Run the demo; returns the results dict (also written to ``output_dir/results.json``)."""
    s = DemoSettings(quick=quick, seed=seed)
    logging.disable(logging.INFO)  # bundle runs log every epoch; the demo shows progress bars instead
    try:
        return _run(s, output_dir, device, seed, overwrite)
    finally:
        logging.disable(logging.NOTSET)


class _Steps:
    """Progress: a tqdm bar on a terminal, one line per step otherwise (logs, notebooks, CI)."""

    def __init__(self, total: int):
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=total, desc="volgan demo", unit="step", disable=not self.tty)
        self.k, self.total, self.t0 = 0, total, time.time()

    def start(self, what: str) -> None:
        self.bar.set_postfix_str(what)
        if not self.tty:
            print(f"volgan demo [{self.k + 1}/{self.total}, {time.time() - self.t0:.0f} s]: {what}", file=sys.stderr,
                  flush=True)

    def done(self) -> None:
        self.k += 1
        self.bar.update()

    def close(self) -> None:
        self.bar.close()


def _run(s: DemoSettings, output_dir, device, seed: int, overwrite: bool) -> dict[str, Any]:
    out = Path(output_dir).resolve()
    _prepare_dir(out, overwrite)
    t0 = time.time()
    regions = list(BRATS_REGIONS)
    steps = _Steps(5)

    steps.start("sample data")
    all_items = load_datalist(make_sample_cases(out / "data", s.cases_per_subject, seed=seed))
    pool = [it for it in all_items if it["subject"] != s.test_subject]
    subjects = sorted({it["subject"] for it in pool})
    train_items = [it for sub in subjects for it in [x for x in pool if x["subject"] == sub][:s.labelled_per_subject]]
    test_items = [it for it in all_items if it["subject"] == s.test_subject]
    steps.done()

    steps.start(f"train MM-GAN on the {len(train_items)} labelled cases")
    gan_dir = out / "mmgan"
    common = dict(device=str(device), seed=seed, gen_channels=s.gen_channels)
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=train_items, output_dir=str(gan_dir),
               max_epochs=s.gan_epochs, patch_size=s.patch, disc_channels=s.disc_channels, lambda_rec=s.lambda_rec,
               log_interval=50, image_interval=50, resume=False, **common)
    ckpt = gan_dir / "model.pt"
    steps.done()

    steps.start("synthesise")
    synth_dir = out / "synthetic"
    synth_items = synthesize_augmentations([{"label": it["label"]} for it in train_items], ckpt, synth_dir,
                                           copies=s.synth_per_case, roi_size=s.roi, **common)
    quality_dir = out / "synthetic_from_test_labels"
    run_bundle("mmgan_label2mri_3d", "inference", input=[{"label": it["label"]} for it in test_items],
               ckpt_path=str(ckpt), output_dir=str(quality_dir), roi_size=s.roi, **common)
    quality_items = load_datalist(quality_dir / "datalist.json")
    steps.done()

    steps.start(f"U-Nets, {len(s.seg_seeds)} seeds: real only, + standard augmentation, + MM-GAN synthetic")
    mixed = f"real+{100 * s.synth_per_case}%"
    gan_name, aug_name = "real + MM-GAN synthetic", "real + standard augmentation"
    names = {"real": "real only", "real+aug": aug_name, mixed: gan_name}
    comparison = compare_segmentation(
        train_items, test_items, synth_items, out / "comparison", settings=("real", "real+aug", mixed),
        seeds=s.seg_seeds, iterations=s.seg_iterations, roi_size=s.roi, device=device, progress=False, names=names,
        segmentor=dict(channels=s.seg_channels, patch_size=s.patch, lr=s.seg_lr, betas=s.seg_betas))
    steps.done()
    steps.start("synthesis quality")
    net_real = load_weights(evaluation_unet(5, s.seg_channels),
                            segmentor_weights(out / "comparison", "real", s.seg_seeds[0]))
    runs = dict(comparison["runs"])
    for r in runs[gan_name]:
        r["n_train"] = f"{len(train_items)} + {len(synth_items)}"
    quality_name = "synthesis quality: real-trained U-Net (seed 0) on synthetic test images"
    quality = {quality_name: [single_run(quality_name, synthesis_quality(net_real, quality_items, roi_size=s.roi,
                                                                         device=device), len(train_items), seed)]}
    steps.done()

    _figure(out / "figure.png", test_items, quality_items)
    elapsed = time.time() - t0
    steps.close()
    note = ("Data: real T1 anatomy of 3 subjects (embedded sample) with SIMULATED tumours; "
            f"train = {len(train_items)} labelled cases (one per subject of 2), test = {len(test_items)} cases of "
            f"the held-out subject '{s.test_subject}'. MM-GAN {s.gan_epochs} epochs on {s.patch} patches (one "
            f"training, seed {seed}), {len(synth_items)} synthetic pairs from perturbed label maps; U-Net "
            f"{s.seg_iterations} iterations per setting and seed, seeds {list(s.seg_seeds)}; ± = sd over the seeds' "
            "mean Dice. Dice = 2|x.y|/(|x|^2+|y|^2).")
    report = write_report(out, "volgan demo (MM-GAN)", runs, regions, f"{note} Run time: {elapsed:.0f} s.",
                          plot=False, reference="real only", elapsed_s=elapsed)
    quality_table = format_table(aggregate(quality, regions), regions).split("\n", 2)[2]
    sentence = reading(report["comparison"], "WT", gan_name, aug_name, len(train_items))
    table = report["table"].replace("\n\nDifference", "\n" + quality_table + "\n\nDifference", 1)
    (out / "results.md").write_text(f"# volgan demo (MM-GAN)\n\n{note} Run time: {elapsed:.0f} s.\n\n{table}\n\n"
                                    f"{sentence}\n", encoding="utf-8")
    print(f"\n# volgan demo (MM-GAN)\n\n{note}\n\n{table}\n\n{sentence}\n\nRun time: {elapsed:.0f} s\n")
    print(f"Wrote: {out / 'figure.png'}, {out / 'results.md'}, synthetic NIfTI + datalist in {synth_dir}")
    return {**report, "table": table, "reading": sentence, "elapsed_s": elapsed, "output_dir": str(out)}
