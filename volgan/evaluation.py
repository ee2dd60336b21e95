"""Evaluation helpers: summary tables of Dice per setting, MM-GAN's synthesis-quality measure (P1 Sec. V-B)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["summarise", "format_table", "synthesis_quality", "mmgan_synthesis_quality", "cycle_shape_scores", "paired_similarity",
           "slicewise_dice"]


def summarise(rows: Sequence[Mapping[str, Any]], regions: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation per region over cases (NaN cases, i.e. region absent in both, are skipped)."""
    out = {}
    for r in regions:
        vals = np.array([row[r] for row in rows if not math.isnan(row[r])], dtype=float)
        out[r] = (float(vals.mean()), float(vals.std())) if len(vals) else (float("nan"), float("nan"))
    return out


def format_table(results: Mapping[str, Mapping[str, Any]], regions: Sequence[str]) -> str:
    """Markdown table: one row per setting with ``n_train`` and mean +- sd Dice per region."""
    head = "| setting | train cases | test cases | " + " | ".join(regions) + " |"
    sep = "|---|---:|---:|" + "---:|" * len(regions)
    lines = [head, sep]
    for name, res in results.items():
        cells = [f"{res['summary'][r][0]:.3f} ± {res['summary'][r][1]:.3f}" for r in regions]
        lines.append(f"| {name} | {res.get('n_train', '')} | {res.get('n_test', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def synthesis_quality(seg_net, synthetic_items: Sequence[Mapping[str, Any]], label_values=(0, 1, 2, 3, 4),
                      regions=None, roi_size=(64, 64, 64), device=None) -> list[dict[str, float]]:
    """MM-GAN's quality measure: Dice of a segmentor trained on real images, applied to images synthesised from
    real label maps, against those label maps (per region). Higher = the synthetic images carry the anatomy
    and lesions where the label map says."""
    from volgan.metrics import BRATS_REGIONS
    from volgan.segmentation import evaluate_segmentor

    return evaluate_segmentor(seg_net, synthetic_items, label_values, regions or BRATS_REGIONS, roi_size, device)


def _write_report(out_dir, title: str, note: str, results: Mapping[str, Mapping[str, Any]], regions: Sequence[str]) -> str:
    import csv
    import json
    from pathlib import Path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(results, regions)
    (out / "results.md").write_text(f"# {title}\n\n{note}\n\n{table}\n", encoding="utf-8")
    (out / "results.json").write_text(json.dumps({"note": note, "results": results}, indent=2, default=str), encoding="utf-8")
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["setting", "case", *regions])
        for name, res in results.items():
            for row in res["rows"]:
                w.writerow([name, row["case"], *[f"{row[r]:.6f}" for r in regions]])
    return table


NO_SIM = {"SSIM": float("nan"), "PSNR (dB)": float("nan")}


def paired_similarity(synthetic: Any, real: Any, label: Any) -> dict[str, float]:
    """SSIM and PSNR (MONAI ``SSIMMetric``/``PSNRMetric``) of a synthetic image against the real image of the same
    label map — the paired reference MM-GAN has for images made from real label maps. Both are z-scored inside
    the label map's foreground (background 0), so intensity scales do not matter; data range = the real
    image's range after that."""
    import torch
    from monai.metrics import PSNRMetric, SSIMMetric

    from volgan.data.transforms import ForegroundNormalized
    from volgan.data.validate import load_volume

    lab = np.asarray(load_volume(label))[None]
    norm = ForegroundNormalized(["s", "r"], label_key="label", scale=False)
    d = norm({"s": np.asarray(load_volume(synthetic), np.float32)[None],
              "r": np.asarray(load_volume(real), np.float32)[None], "label": lab})
    s, r = (torch.as_tensor(np.asarray(d[k]))[None].float() for k in ("s", "r"))
    rng = float(r.max() - r.min()) or 1.0
    return {"SSIM": float(SSIMMetric(3, data_range=rng)(s, r).mean()), "PSNR (dB)": float(PSNRMetric(rng)(s, r).mean())}


def mmgan_synthesis_quality(
    dataset_dir: Any,
    ckpt_path: str,
    output_dir: str,
    ckpt_path_nopool: str | None = None,
    seg_ckpt_path: str | None = None,
    label_values: Sequence[int] = (0, 1, 2, 3, 4),
    val_fraction: float = 0.25,
    group_key: str | None = "subject",
    seg_iterations: int = 300,
    seg_channels: Sequence[int] = (16, 32, 64, 128),
    patch_size: Sequence[int] = (32, 32, 32),
    roi_size: Sequence[int] = (96, 96, 96),
    gen_channels: Sequence[int] = (16, 32, 64, 128),
    seed: int = 0,
    device: Any = None,
) -> dict[str, Any]:
    """MM-GAN's synthesis-quality measure (P1 Sec. V-B, Fig. 7), with and without the image pool.

    The real (image, label) pairs of ``dataset_dir`` are split (by ``group_key`` when the datalist has it);
    a 3D U-Net is trained on the real training part (or loaded from ``seg_ckpt_path``); images are
    synthesised from the held-out label maps with each generator (``ckpt_path``: with pool;
    ``ckpt_path_nopool``: trained with ``--pool_size 0``); the U-Net segments them and Dice per region is
    taken against the label maps they came from. The same U-Net on the real held-out images is the reference
    row. Writes ``results.md``, ``results.json``, ``results.csv`` and the synthetic volumes in ``output_dir``.
    """
    from pathlib import Path

    from volgan.data.dataset import resolve_dataset, split_datalist
    from volgan.data.datalist import load_datalist
    from volgan.inference import synthesize
    from volgan.metrics import BRATS_REGIONS
    from volgan.segmentation import evaluate_segmentor, make_segmentor, train_segmentor
    from volgan.utils import atomic_torch_save, resolve_device, safe_torch_load

    out = Path(output_dir)
    items = resolve_dataset(dataset_dir, out, label_values=label_values)
    use_group = group_key if group_key and all(group_key in it for it in items) else None
    train, test = split_datalist(items, val_fraction, seed, use_group)
    regions = list(BRATS_REGIONS) + list(NO_SIM)
    dev = resolve_device(device)
    if seg_ckpt_path:
        seg = make_segmentor(3, len(label_values), seg_channels).to(dev)
        seg.load_state_dict(safe_torch_load(seg_ckpt_path, dev)["model"])
    else:
        seg = train_segmentor(train, label_values, seg_iterations, patch_size, channels=seg_channels, seed=seed,
                              device=dev, desc="U-Net on real images")
        atomic_torch_save({"model": seg.state_dict()}, out / "segmentor.pt")
    results: dict[str, Any] = {}
    rows = [dict(r, **NO_SIM) for r in evaluate_segmentor(seg, test, label_values, BRATS_REGIONS, roi_size, dev)]
    results["real held-out images (reference)"] = {"n_train": len(train), "n_test": len(test), "rows": rows,
                                                   "summary": summarise(rows, regions)}
    gens = {"synthetic, with image pool": ckpt_path}
    if ckpt_path_nopool:
        gens["synthetic, without image pool"] = ckpt_path_nopool
    labels_only = [{"label": it["label"]} for it in test]
    for i, (name, ck) in enumerate(gens.items()):
        sdir = out / f"synthetic_{i}"
        synthesize(labels_only, ck, sdir, roi_size=list(roi_size), gen_channels=list(gen_channels), seed=seed,
                   device=str(dev), overwrite=True, label_values=list(label_values))
        synth = load_datalist(sdir / "datalist.json")
        rows = synthesis_quality(seg, synth, label_values, BRATS_REGIONS, roi_size, dev)
        sim = {os.path.abspath(str(it["source"])): paired_similarity(it["image"], ref["image"], ref["label"])
               for it in synth for ref in test if os.path.abspath(str(ref["label"])) == os.path.abspath(str(it["source"]))}
        rows = [dict(r, **sim.get(os.path.abspath(str(it["source"])), NO_SIM)) for r, it in zip(rows, synth)]
        results[name] = {"n_train": len(train), "n_test": len(rows), "rows": rows, "summary": summarise(rows, regions)}
    note = (f"Segmentor: MONAI 3D U-Net {list(seg_channels)}, {seg_iterations} iterations on {len(train)} real cases "
            f"(seed {seed}); test: {len(test)} held-out cases; device {dev}. Dice = 2|x.y|/(|x|^2+|y|^2). SSIM / PSNR: "
            "synthetic vs the real image of the same label map, both z-scored inside the label map's foreground.")
    table = _write_report(out, "MM-GAN synthesis quality (Dice of a real-trained U-Net on synthetic images)", note,
                          results, regions)
    print(table)
    return {"results": results, "table": table}


def cycle_shape_scores(
    test_a: Any,
    test_b: Any,
    ckpt_dir: str,
    output_dir: str,
    ref_dir: str | None = None,
    num_classes: int = 5,
    label_map_a: Mapping | None = None,
    label_map_b: Mapping | None = None,
    intensity_a: Mapping | None = None,
    intensity_b: Mapping | None = None,
    gen_channels: Sequence[int] = (32, 64, 256, 256),
    seg_kind: str = "unet",
    seg_channels: Sequence[int] = (32, 64, 128, 256),
    roi_size: Sequence[int] = (96, 96, 32),
    spatial_dims: int = 3,
    device: Any = None,
    title: str = "cycle/shape GAN",
) -> dict[str, Any]:
    """P2's measures on held-out real volumes of both domains.

    - S-score (Sec. 4.2): mean foreground Dice of a segmentor trained on the *target* domain's real data
      (``ref_dir``'s ``model_s_a.pt``/``model_s_b.pt``: use a ``cyclegan``-mode run, whose S saw real data only)
      applied to the translated volumes G_B(x_A) (resp. G_A(x_B)), against the source label.
    - Segmentation Dice of this run's S_A on real A and S_B on real B.
    ``ckpt_dir`` holds ``model.pt`` (G_B), ``model_g_a.pt``, ``model_s_a.pt``, ``model_s_b.pt``.
    """
    from pathlib import Path

    import torch
    from monai.inferers import sliding_window_inference

    from volgan.data.datalist import load_datalist
    from volgan.data.unpaired import domain_transforms
    from volgan.metrics import region_dice
    from volgan.networks import cycle_generator, make_cycle_segmentor
    from volgan.utils import resolve_device, safe_torch_load

    dev = resolve_device(device)
    ckpt, ref = Path(ckpt_dir), Path(ref_dir or ckpt_dir)

    def load(net, path):
        net.load_state_dict(safe_torch_load(path, dev)["model"])
        return net.to(dev).eval()

    g_b = load(cycle_generator(spatial_dims, 1, 1, gen_channels), ckpt / "model.pt")
    g_a = load(cycle_generator(spatial_dims, 1, 1, gen_channels), ckpt / "model_g_a.pt")
    seg = {k: load(make_cycle_segmentor(seg_kind, spatial_dims, 1, num_classes, seg_channels), d / f"model_s_{x}.pt")
           for k, d, x in (("s_a", ckpt, "a"), ("s_b", ckpt, "b"), ("ref_a", ref, "a"), ("ref_b", ref, "b"))}
    regions = {f"class {k}": (k,) for k in range(1, num_classes)}

    def run(net, x):
        return sliding_window_inference(x[None].to(dev), list(roi_size), 1, net, overlap=0.5, mode="gaussian")

    def fg_dice(pred, lab):
        d = region_dice(pred, lab, regions)
        vals = [v for v in d.values() if v == v]  # NaN: class absent in both
        return float(sum(vals) / len(vals)) if vals else float("nan")

    rows: dict[str, list[dict[str, float]]] = {"S-score A->B": [], "S-score B->A": [], "Dice S_A (real A)": [],
                                               "Dice S_B (real B)": []}
    for items, intensity, mapping, gen, ref_seg, own_seg, s_key, d_key in (
        (test_a, intensity_a, label_map_a, g_b, seg["ref_b"], seg["s_a"], "S-score A->B", "Dice S_A (real A)"),
        (test_b, intensity_b, label_map_b, g_a, seg["ref_a"], seg["s_b"], "S-score B->A", "Dice S_B (real B)"),
    ):
        xf = domain_transforms(intensity or {}, mapping, num_classes, None, spatial_dims)
        for it in load_datalist(items):
            d = xf({"image": it["image"], "label": it["label"]})
            x, lab = torch.as_tensor(d["image"]).float(), torch.as_tensor(d["label"])[0].long()
            with torch.no_grad():
                fake = run(gen, x)[0]
                rows[s_key].append({"case": it["image"], "mean fg Dice": fg_dice(run(ref_seg, fake).argmax(1)[0].cpu(), lab)})
                rows[d_key].append({"case": it["image"], "mean fg Dice": fg_dice(run(own_seg, x).argmax(1)[0].cpu(), lab)})
    results = {k: {"n_train": "", "n_test": len(v), "rows": v, "summary": summarise(v, ["mean fg Dice"])}
               for k, v in rows.items()}
    note = f"checkpoints {ckpt}; S-score reference segmentors {ref}; device {dev}."
    table = _write_report(output_dir, f"{title}: S-score and segmentation Dice", note, results, ["mean fg Dice"])
    print(table)
    return {"results": results, "table": table}


def slicewise_dice(items: Any, network: Any, ckpt_path: str, output_dir: str, foreground: Sequence[int] | None = None,
                   image_size: Sequence[int] | None = (256, 256), axis: int = 2, keep_largest: bool = True,
                   device: Any = None, title: str = "2D segmentor, slice-wise") -> dict[str, Any]:
    """3D Dice, HD95 and maximum Hausdorff distance (MONAI, in voxels) of a 2D segmentor (``network`` with the
    weights of ``ckpt_path``) run slice by slice over held-out volumes and stacked back (P3, P5), after the
    optional largest-connected-component filter (P5 keeps only the largest component)."""
    import numpy as np
    import torch
    from monai.metrics import compute_hausdorff_distance
    from monai.transforms import KeepLargestConnectedComponent

    from volgan.data.datalist import load_datalist
    from volgan.data.slices import _to_unit_range, predict_slicewise
    from volgan.data.validate import load_volume
    from volgan.metrics import dice_paper
    from volgan.utils import resolve_device, safe_torch_load

    dev = resolve_device(device)
    net = network.to(dev)
    net.load_state_dict(safe_torch_load(ckpt_path, dev)["model"])
    rows = []
    for it in load_datalist(items):
        img = torch.as_tensor(np.asarray(load_volume(it["image"])), dtype=torch.float32)
        lab = torch.as_tensor(np.asarray(load_volume(it["label"]))).long()
        fg = lab > 0 if foreground is None else torch.isin(lab, torch.as_tensor(list(foreground)))
        x = _to_unit_range(img, 0.5, 99.5)[None]
        pred = predict_slicewise(net, x, axis, image_size, device=dev)
        if keep_largest:
            pred = KeepLargestConnectedComponent(applied_labels=[1])(pred[None])[0]
        p, t = (pred == 1)[None, None].float(), fg[None, None].float()
        both = bool(p.any()) and bool(t.any())
        hd95 = float(compute_hausdorff_distance(p, t, percentile=95)[0, 0]) if both else float("nan")
        hdmax = float(compute_hausdorff_distance(p, t)[0, 0]) if both else float("nan")
        rows.append({"case": it["image"], "Dice": dice_paper(p, t), "HD95 (voxels)": hd95, "HD max (voxels)": hdmax})
    cols = ["Dice", "HD95 (voxels)", "HD max (voxels)"]
    results = {"held-out volumes": {"n_train": "", "n_test": len(rows), "rows": rows, "summary": summarise(rows, cols)}}
    table = _write_report(output_dir, title, f"checkpoint {ckpt_path}; device {dev}", results, cols)
    print(table)
    return {"results": results, "table": table}
