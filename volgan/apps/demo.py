"""``volgan demo``: MM-GAN end to end on the embedded sample data, in a few minutes on 2 CPU cores.

1. Materialise the sample cases (real T1 anatomy with simulated tumours, see ``volgan.data.samples``);
   hold out one subject for testing.
2. Train MM-GAN briefly with the bundle ``mmgan_label2mri_3d`` (``train.yaml``).
3. Synthesise new (image, label) pairs from perturbed training label maps (``inference.yaml``), and images
   from the real test label maps (for the synthesis-quality measure).
4. Train the same small 3D U-Net on real-only and on real + synthetic data (same iterations and seed) with the
   evaluation harness (``volgan.evaluation.compare_segmentation``), evaluate Dice per label on the held-out
   subject, score the synthesis quality with the real-only U-Net, print the table, write ``results.md`` /
   ``results.json`` and ``figure.png``.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from matplotlib.figure import Figure  # no pyplot: the caller's backend (e.g. Jupyter's inline) stays as it is
from tqdm.auto import tqdm

from volgan.bundle import run_bundle
from volgan.data import load_datalist, make_sample_cases
from volgan.errors import VolganConfigError
from volgan.evaluation import BRATS_REGIONS, compare_segmentation, evaluation_unet, synthesis_quality, write_report
from volgan.evaluation.harness import segmentor_weights
from volgan.evaluation.report import single_run
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
        self.patch = [32, 32, 32]
        self.roi = [64, 64, 64]  # whole sample volumes fit in one window
        self.gan_epochs = 2 if quick else 16
        self.gen_channels = [8, 16, 32, 64] if quick else [16, 32, 64, 128]
        self.disc_channels = [16, 32, 64] if quick else [32, 64, 128]
        self.synth_per_case = 1 if quick else 2
        self.seg_iterations = 6 if quick else 300
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


def _figure(path: Path, real_items, synth_items, n: int = 3) -> None:
    n = min(n, len(real_items), len(synth_items))
    fig = Figure(figsize=(9, 3 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        lab = np.asarray(nib.load(real_items[i]["label"]).dataobj)
        img = np.asarray(nib.load(real_items[i]["image"]).dataobj)
        syn = np.asarray(nib.load(synth_items[i]["image"]).dataobj)
        lesion = np.argwhere(np.isin(lab, [1, 2, 4]))
        z = int(lesion[:, 2].mean()) if len(lesion) else lab.shape[2] // 2
        for ax, data, title, cmap in ((axes[i, 0], lab, "label map", "viridis"), (axes[i, 1], img, "real image", "gray"),
                                      (axes[i, 2], syn, "synthetic image", "gray")):
            ax.imshow(data[:, :, z].T, origin="lower", cmap=cmap, interpolation="nearest")
            ax.set_title(f"{title} (z={z})", fontsize=9)
            ax.axis("off")
    fig.suptitle("MM-GAN demo: real anatomy with SIMULATED tumours; synthetic from the same label map", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def run_demo(output_dir: str | Path = "volgan-demo", quick: bool = False, device: Any = "cpu", seed: int = 0,
             overwrite: bool = False) -> dict[str, Any]:
    """Run the demo; returns the results dict (also written to ``output_dir/results.json``)."""
    s = DemoSettings(quick=quick, seed=seed)
    logging.disable(logging.INFO)  # bundle runs log every epoch; the demo shows progress bars instead
    try:
        return _run(s, output_dir, device, seed, overwrite)
    finally:
        logging.disable(logging.NOTSET)


def _run(s: DemoSettings, output_dir, device, seed: int, overwrite: bool) -> dict[str, Any]:
    out = Path(output_dir).resolve()
    _prepare_dir(out, overwrite)
    t0 = time.time()
    regions = list(BRATS_REGIONS)
    steps = tqdm(total=5, desc="volgan demo", unit="step", disable=None)

    steps.set_postfix_str("sample data")
    all_items = load_datalist(make_sample_cases(out / "data", s.cases_per_subject, seed=seed))
    train_items = [it for it in all_items if it["subject"] != s.test_subject]
    test_items = [it for it in all_items if it["subject"] == s.test_subject]
    steps.update()

    steps.set_postfix_str("train MM-GAN")
    gan_dir = out / "mmgan"
    common = dict(device=str(device), seed=seed, gen_channels=s.gen_channels)
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=train_items, output_dir=str(gan_dir),
               max_epochs=s.gan_epochs, patch_size=s.patch, disc_channels=s.disc_channels, lambda_rec=s.lambda_rec,
               log_interval=50, image_interval=50, resume=False, **common)
    ckpt = gan_dir / "model.pt"
    steps.update()

    steps.set_postfix_str("synthesise")
    synth_dir = out / "synthetic"
    synth_items = synthesize_augmentations([{"label": it["label"]} for it in train_items], ckpt, synth_dir,
                                           copies=s.synth_per_case, roi_size=s.roi, **common)
    quality_dir = out / "synthetic_from_test_labels"
    run_bundle("mmgan_label2mri_3d", "inference", input=[{"label": it["label"]} for it in test_items],
               ckpt_path=str(ckpt), output_dir=str(quality_dir), roi_size=s.roi, **common)
    quality_items = load_datalist(quality_dir / "datalist.json")
    steps.update()

    steps.set_postfix_str("segmentors: real only, real + synthetic")
    mixed = f"real+{100 * s.synth_per_case}%"
    names = {"real": "real only", mixed: "real + synthetic"}
    comparison = compare_segmentation(
        train_items, test_items, synth_items, out / "comparison", settings=("real", mixed), seeds=(seed,),
        iterations=s.seg_iterations, roi_size=s.roi, device=device, progress=False, names=names,
        segmentor=dict(channels=s.seg_channels, patch_size=s.patch, lr=s.seg_lr, betas=s.seg_betas))
    steps.update()
    net_real = load_weights(evaluation_unet(5, s.seg_channels), segmentor_weights(out / "comparison", "real", seed))
    runs = dict(comparison["runs"])
    runs["real + synthetic"][0]["n_train"] = f"{len(train_items)} + {len(synth_items)}"
    quality = "synthesis quality: real-trained U-Net on synthetic test images"
    runs[quality] = [single_run(quality, synthesis_quality(net_real, quality_items, roi_size=s.roi, device=device),
                                len(train_items), seed)]
    steps.update()

    _figure(out / "figure.png", test_items, quality_items)
    elapsed = time.time() - t0
    steps.close()
    note = ("Data: real T1 anatomy of 3 subjects (embedded sample) with SIMULATED tumours; "
            f"train = {len(train_items)} cases of 2 subjects, test = {len(test_items)} cases of the held-out "
            f"subject '{s.test_subject}'. MM-GAN {s.gan_epochs} epochs on {s.patch} patches; "
            f"U-Net {s.seg_iterations} iterations per setting, seed {seed}. Dice = 2|x.y|/(|x|^2+|y|^2).")
    report = write_report(out, "volgan demo (MM-GAN)", runs, regions, f"{note} Run time: {elapsed:.0f} s.",
                          plot=False, elapsed_s=elapsed)
    print(f"\n# volgan demo (MM-GAN)\n\n{note}\n\n{report['table']}\n\nRun time: {elapsed:.0f} s\n")
    print(f"Wrote: {out / 'figure.png'}, {out / 'results.md'}, synthetic NIfTI + datalist in {synth_dir}")
    return {**report, "elapsed_s": elapsed, "output_dir": str(out)}
