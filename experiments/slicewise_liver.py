"""The 2D methods (P3, P5, P4) at small scale on real abdominal CT: liver, few training slices, 3D Dice on a
held-out slab.

    python experiments/slicewise_liver.py --method p3 --data ../shared/data --out runs/liver [--seeds 0 1]
    python experiments/slicewise_liver.py --method p5 ...
    python experiments/slicewise_liver.py --method p4 ...

Data: ``ct_mr_abdomen_totalseg/example_ct.nii.gz`` (one real patient, 122x101x112 at 3 mm) with the liver
(label 5) of ``example_seg_fast_force_split.nii.gz`` (a TotalSegmentator output, not manual ground truth).
One patient only, so the split is by region: the test set is the axial slab z 84-95 (12 slices, restacked to 3D
for Dice/HD95); ``--n-train`` liver slices spread evenly over z 66-79 and 100-111 plus two liver-free slices
(z 60, 62) form the training volume; z 81 and 98 (two slices between train and test, not used for training) are
the validation set that P5's early stopping needs and that the GANs' stopping criterion scores
(``--gan-val-interval N --gan-val-patience K``: every GAN is trained until its score on those slices stops
improving, at most ``--gan-iterations`` / ``--gan-epochs``; the settings that share a GAN use its best). Every
setting of a method gets the same slices, image size, budget and seeds. Runs through
``volgan.evaluation.compare_bundle_settings`` (resumable: a finished setting is not re-run); prints the Markdown
table (mean +- sd over seeds, training + evaluation time per setting) and writes
``OUT/<method>/results.{md,csv,json}`` and ``dice.png`` (with the criterion also ``gan_curves.{md,png}``: each
GAN's curve, its best and whether the rule stopped it).

``--sizes 1 2 4 8``: the learning curve instead (issue #20): the same comparison with 1, 2, 4, 8 training liver
slices (``--curve-settings``, default real only, the standard augmentation, the non-GAN baseline where the method
has one and the GAN), each point with its 95 % bootstrap interval over test slices' volume and seeds and its
paired difference to real only -> ``OUT/<method>/learning_curve/learning_curve.{md,csv,json,png}``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nibabel as nib
import numpy as np

from volgan.evaluation import METHODS as REGISTRY
from volgan.evaluation import compare_bundle_settings, learning_curve_over, trained_gan_curves, write_stopping_curves

LIVER = 5
TEST = range(84, 96)
VAL = [81, 98]
EMPTY = [60, 62]


def write_volume(img: nib.Nifti1Image, lab: np.ndarray, zs: list[int], path: Path) -> dict:
    """The slices ``zs`` of the CT and its label stacked into one volume (slice-wise methods need no z-order)."""
    arr = np.asarray(img.dataobj)
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ np.array([0, 0, zs[0]]) + img.affine[:3, 3]
    ip, lp = path.with_name(path.name + "_image.nii.gz"), path.with_name(path.name + "_label.nii.gz")
    for data, path in ((arr[..., zs].astype(np.float32), ip), (lab[..., zs].astype(np.uint8), lp)):
        tmp = path.with_name(f".{path.name}.{os.getpid()}.nii.gz")  # atomic: runs of two methods share OUT/data
        nib.save(nib.Nifti1Image(data, aff), str(tmp))
        os.replace(tmp, path)
    return {"image": str(ip), "label": str(lp)}


def prepare(data: Path, out: Path, n_train: int) -> dict[str, list[dict]]:
    root = data / "ct_mr_abdomen_totalseg"
    img = nib.load(str(root / "example_ct.nii.gz"))
    lab = np.asarray(nib.load(str(root / "example_seg_fast_force_split.nii.gz")).dataobj)
    pool = [z for z in list(range(66, 80)) + list(range(100, 112)) if (lab[..., z] == LIVER).any()]
    train = [pool[int(i)] for i in np.linspace(0, len(pool) - 1, n_train).round()]
    out.mkdir(parents=True, exist_ok=True)
    return {"train": [write_volume(img, lab, sorted(EMPTY + train), out / f"train{n_train}")],
            "val": [write_volume(img, lab, VAL, out / "val")],
            "test": [write_volume(img, lab, list(TEST), out / "test")],
            "train_z": train}


def p3_settings(a: argparse.Namespace) -> dict[str, dict]:
    common = dict(foreground=[LIVER], canny_preset="liver", image_size=[a.size, a.size], ngf=32, batch_size=4,
                  gan_epochs=a.gan_epochs, finetune_epochs=a.seg_epochs, synthetic_copies=3, log_interval=50,
                  image_interval=10**6, amp=False)
    return {k: dict(common, **v) for k, v in REGISTRY["gan_pretrain_seg_2d"].settings.items()}


def p5_settings(a: argparse.Namespace) -> dict[str, dict]:
    common = dict(foreground=[LIVER], image_size=[a.size, a.size], gan_iterations=a.gan_iterations,
                  gen_channels=256, critic_channels=32, max_epochs=a.unet_epochs, val_interval=20,
                  patience_iterations=200, log_interval=100, amp=False)
    return {k: dict(common, **v) for k, v in REGISTRY["wgan_pairs_seg_2d"].settings.items()}


def p4_settings(a: argparse.Namespace) -> dict[str, dict]:
    common = dict(foreground=[LIVER], image_size=[a.size, a.size], gan_iterations=a.gan_iterations,
                  gen_channels=[16, 32, 64, 64], critic_features=16, critic_growth=16, critic_stem_stride=2,
                  gan_batch_size=8, max_epochs=a.unet_epochs,
                  val_interval=20, patience_iterations=200, log_interval=100, amp=False)
    return {k: dict(common, **v) for k, v in REGISTRY["adversarial_unet_aug_2d"].settings.items()}


#: the learning curve's settings per method: real only, standard augmentation, non-GAN synthesis, GAN
CURVE_SETTINGS = {"p3": ["real_only", "elastic", "gaussian_mix", "gan_mix"],
                  "p5": ["16-0 no aug", "16-0 aug", "8-8 no aug", "8-8 aug"],
                  "p4": ["without augmenter", "standard augmentation", "with augmenter",
                         "augmenter + standard augmentation"]}

#: bundle and settings (settings that use one GAN differently share it: the registry's share_gan)
METHODS = {"p3": ("gan_pretrain_seg_2d", p3_settings),
           "p5": ("wgan_pairs_seg_2d", p5_settings),
           "p4": ("adversarial_unet_aug_2d", p4_settings)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--method", choices=sorted(METHODS), required=True)
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="runs/liver")
    p.add_argument("--n-train", type=int, default=8)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--gan-epochs", type=int, default=60, help="P3 stage-1 epochs")
    p.add_argument("--gan-iterations", type=int, default=1000, help="P5/P4 GAN iterations")
    p.add_argument("--seg-epochs", type=int, default=60, help="P3 segmentor epochs")
    p.add_argument("--unet-epochs", type=int, default=600,
                   help="P5/P4 U-Net epochs, an upper bound (early stopping); one epoch = max(slices, 16) draws")
    p.add_argument("--gan-val-interval", type=int, default=0,
                   help="the GAN's stopping criterion (#20): score it on the validation slices every N GAN "
                        "iterations (P3: epochs; P5/P4: MMD to the held-out slices, P3: SSIM); 0: the fixed budget, "
                        "which --gan-iterations / --gan-epochs then caps")
    p.add_argument("--gan-val-patience", type=int, default=0,
                   help="stop the GAN this many validations after its best score and use that generator")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", type=int, nargs="+", help="learning curve over this many training liver slices")
    p.add_argument("--curve-settings", nargs="+", help="the learning curve's settings (default CURVE_SETTINGS)")
    p.add_argument("--settings", nargs="+", help="the comparison's settings (default every setting of the method; "
                   "keep the reference, e.g. real_only, for the paired differences)")
    a = p.parse_args()
    bundle, make = METHODS[a.method]
    out = Path(a.out)
    settings = make(a)
    names = (a.curve_settings or CURVE_SETTINGS[a.method]) if a.sizes else (a.settings or list(settings))
    unknown = sorted(set(names) - set(settings))
    if unknown:
        p.error(f"unknown settings {unknown}; {a.method} has {list(settings)}")
    chosen = {k: settings[k] for k in names}
    title = f"{bundle} on liver CT slices"

    def run(n_train: int, folder: Path, chosen: dict[str, dict]) -> dict:
        sets = prepare(Path(a.data), out / "data", n_train)
        validated = a.method in ("p5", "p4") or a.gan_val_interval > 0  # P5/P4 stop their U-Net on it too
        stopping = {"gan_val_interval": a.gan_val_interval, "gan_val_patience": a.gan_val_patience}
        common = {"device": a.device, **(stopping if a.gan_val_interval > 0 else {}),
                  **({"val_dataset_dir": sets["val"]} if validated else {})}
        print(f"training liver slices z = {sets['train_z']}; test slab z {TEST.start}-{TEST.stop - 1}; "
              f"{n_train} training slices at {a.size}x{a.size}; seeds {a.seeds}")
        return compare_bundle_settings(bundle, sets["train"], sets["test"], folder, chosen, a.seeds, common,
                                       title=title)

    if a.sizes:
        res = learning_curve_over(a.sizes, lambda k, folder: run(k, folder, chosen), out / a.method / "learning_curve",
                                  unit="slices")
    else:
        res = run(a.n_train, out / a.method, chosen)
        if a.gan_val_interval > 0:  # the record of the criterion: each GAN's curve, best and stop
            p3 = a.method == "p3"  # SSIM per epoch; P5/P4: MMD per iteration
            curves = trained_gan_curves(bundle, out / a.method, names, a.seeds)
            print(write_stopping_curves(out / a.method, curves, "max" if p3 else "min", a.gan_val_patience,
                                        unit="epoch" if p3 else "iteration"))
    print(res["table"])


if __name__ == "__main__":
    main()
