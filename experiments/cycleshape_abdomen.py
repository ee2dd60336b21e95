"""P2 at small scale on real abdominal CT and MRI (TotalSegmentator examples in ../shared/data).

    python experiments/cycleshape_abdomen.py --data ../shared/data --out runs/cycleshape_abdomen [--seeds 0 1 2]

Domain A = CT (example_ct.nii.gz, organ labels example_seg_fast_force_split.nii.gz), domain B = MRI
(example_mr_sm.nii.gz, example_seg_mr.nii.gz); shared classes by name: spleen, kidney_right, kidney_left, liver
(labels are model outputs, not manual ground truth). One volume per domain, so training and testing use
different z-slabs (held-out region): CT z 60-95 train / 96-111 test, MRI z 0-12 train / 13-19 test. Each training
slab is listed 8 times so an epoch samples 8 patches. The three modes get the same budget and seed; the S-score
uses the cyclegan run's segmentors (trained on real data only) as the reference. Prints a Markdown table and each
mode's paired difference to cyclegan (by seed: the interval is over the seeds, one test volume per domain).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from volgan.data import shared_label_mapping
from volgan.evaluation import CYCLESHAPE_MODES, compare_cycleshape
from volgan.evaluation.report import format_comparison
from volgan.io import atomic_write_bytes, atomic_write_json

CLASSES = ["spleen", "kidney_right", "kidney_left", "liver"]


def slab(src_img: Path, src_lab: Path, z0: int, z1: int, out: Path, name: str) -> dict:
    ip, lp = out / f"{name}_image.nii.gz", out / f"{name}_label.nii.gz"
    if ip.is_file() and lp.is_file():  # written once (parallel seeds share them)
        return {"image": str(ip), "label": str(lp)}
    img, lab = nib.load(str(src_img)), nib.load(str(src_lab))
    aff = img.affine.copy()
    aff[:3, 3] = img.affine[:3, :3] @ np.array([0, 0, z0]) + img.affine[:3, 3]
    for path, arr in ((ip, np.asarray(img.dataobj)[..., z0:z1].astype(np.float32)),
                      (lp, np.asarray(lab.dataobj)[..., z0:z1].astype(np.uint8))):
        # whole or absent (temp file + rename): a seed started beside this one may be reading it
        atomic_write_bytes(path, gzip.compress(nib.Nifti1Image(arr, aff).to_bytes()))
    return {"image": str(ip), "label": str(lp)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="runs/cycleshape_abdomen")
    p.add_argument("--epochs", type=int, nargs=3, default=[150, 10, 10], help="S pre-train, G/D pre-train, joint/ada")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one GAN run per seed and mode; resumable")
    p.add_argument("--modes", nargs="+", default=list(CYCLESHAPE_MODES), choices=CYCLESHAPE_MODES,
                   help="a subset of the modes (cyclegan, the S-score reference, is always run)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    root = Path(args.data) / "ct_mr_abdomen_totalseg"
    out = Path(args.out).resolve()  # the datalists below hold absolute paths (read relative to their own folder)
    (out / "data").mkdir(parents=True, exist_ok=True)
    names = json.loads((root / "labels.json").read_text(encoding="utf-8"))
    map_a = shared_label_mapping(names["total"], CLASSES)
    map_b = shared_label_mapping(names["total_mr"], CLASSES)
    ct = (root / "example_ct.nii.gz", root / "example_seg_fast_force_split.nii.gz")
    mr = (root / "example_mr_sm.nii.gz", root / "example_seg_mr.nii.gz")
    lists = {
        "train_a": [slab(*ct, 60, 96, out / "data", "ct_train")] * 8,
        "test_a": [slab(*ct, 96, 112, out / "data", "ct_test")],
        "train_b": [slab(*mr, 0, 13, out / "data", "mr_train")] * 8,
        "test_b": [slab(*mr, 13, 20, out / "data", "mr_test")],
    }
    for k, v in lists.items():
        atomic_write_json(out / f"{k}.json", {"training": v})
    for k in ("train_a", "train_b"):  # one copy of each training slab: the segmentors' Dice where they trained
        atomic_write_json(out / f"{k}1.json", {"training": lists[k][:1]})
    common = dict(device=args.device, label_map_a=map_a, label_map_b=map_b, num_classes=len(CLASSES) + 1,
                  patch_size=[64, 64, 16], gen_channels=[16, 32, 64, 64], disc_channels=[32, 64, 128, 128],
                  disc_strides=[2, 2, 1, 1], seg_channels=[16, 32, 64, 128], pool_size=10, log_interval=20,
                  image_interval=40, amp=False)
    pre_s, pre_gd, joint = args.epochs
    common.update(pretrain_s_epochs=pre_s, pretrain_gd_epochs=pre_gd, max_epochs=pre_s + pre_gd + joint,
                  decay_epochs=max(joint // 2, 1), early_stop_patience=0, roi_size=[64, 64, 16])
    modes = [m for m in CYCLESHAPE_MODES if m == "cyclegan" or m in args.modes]
    res = compare_cycleshape(str(out / "train_a.json"), str(out / "train_b.json"), str(out / "test_a.json"),
                             str(out / "test_b.json"), out, modes=modes, seeds=args.seeds, common=common,
                             extra_tests={"train slabs": (str(out / "train_a1.json"), str(out / "train_b1.json"))},
                             title="P2 cycle/shape GAN on real abdomen CT / MRI slabs")
    table = ["| mode | S-score CT->MRI | S-score MRI->CT | Dice S_A on CT | Dice S_B on MRI | train slabs: S-score "
             "CT->MRI | S-score MRI->CT | Dice S_A on CT | Dice S_B on MRI | train s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for mode, agg in res["results"].items():
        cols = [f"{agg['summary'][m][0]:.3f} ± {agg['summary'][m][1]:.3f}" for m in res["metrics"]]
        table.append(f"| {mode} | {' | '.join(cols)} | {agg['seconds']:.0f} |")
    text = "\n".join(table) + "\n\n" + format_comparison(res["comparison"], res["reference"])
    (out / "table.md").write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
