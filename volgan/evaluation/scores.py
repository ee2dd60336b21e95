"""Each paper's own measure of a trained model, on held-out real data (what a bundle's ``evaluate.yaml`` runs):

- P1 MM-GAN: synthesis quality = Dice of a real-trained U-Net on images synthesised from real label maps (Sec. V-B,
  Fig. 7), with SSIM / PSNR against the real image of the same label map: ``mmgan_synthesis_quality``;
- P2: S-score both ways and each domain's segmentation Dice (Sec. 4.2): ``cycle_shape_scores``;
- P3, P4, P5: 3D Dice / HD95 of a 2D segmentor run slice by slice and restacked: ``slicewise_dice`` (P4 adds FID
  and MMD of generated vs real slices, ``volgan.evaluation.metrics.conditional_generation_distances``).

Each writes its report with ``volgan.evaluation.report.write_report`` and returns what that returns; the setting
names below are how the harness finds the rows.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.metrics import PSNRMetric, SSIMMetric, compute_hausdorff_distance
from monai.transforms import KeepLargestConnectedComponent

from volgan.config import resolve_device
from volgan.data.dataset import resolve_dataset, split_datalist
from volgan.data.datalist import load_datalist
from volgan.data.slices import scale_to_unit_range
from volgan.data.transforms import ForegroundNormalized
from volgan.data.unpaired import domain_transforms
from volgan.data.validate import load_volume
from volgan.evaluation.metrics import BRATS_REGIONS, conditional_generation_distances, dice_paper, mean_foreground_dice
from volgan.evaluation.report import single_run, write_report
from volgan.evaluation.segmentor import evaluate_segmentor, evaluation_unet, train_segmentor
from volgan.inferers import SlicewiseInferer, predict, predict_labels, sliding_window_inferer, synthesis_inferer
from volgan.io import atomic_write_json, load_weights, save_weights
from volgan.synthesis import synthesize

__all__ = ["REFERENCE", "WITH_POOL", "WITHOUT_POOL", "HELD_OUT", "S_SCORE_A2B", "S_SCORE_B2A", "DICE_S_A",
           "DICE_S_B", "CYCLESHAPE_METRICS", "SLICEWISE_METRICS", "GENERATION_METRICS", "synthesis_quality",
           "paired_similarity", "mmgan_synthesis_quality", "cycle_shape_scores", "generation_distances", "slicewise_dice"]

REFERENCE = "real held-out images (reference)"
WITH_POOL, WITHOUT_POOL = "synthetic, with image pool", "synthetic, without image pool"
HELD_OUT = "held-out volumes"
S_SCORE_A2B, S_SCORE_B2A = "S-score A->B", "S-score B->A"
DICE_S_A, DICE_S_B = "Dice S_A (real A)", "Dice S_B (real B)"
CYCLESHAPE_METRICS = (S_SCORE_A2B, S_SCORE_B2A, DICE_S_A, DICE_S_B)
MEAN_FG_DICE = "mean fg Dice"
SLICEWISE_METRICS = ("Dice", "HD95 (voxels)", "HD max (voxels)")
GENERATION_METRICS = {"mmd": "MMD (features)", "fid": "FID (features)"}
NO_SIM = {"SSIM": float("nan"), "PSNR (dB)": float("nan")}


def synthesis_quality(seg_net, synthetic_items: Sequence[Mapping[str, Any]], label_values=(0, 1, 2, 3, 4),
                      regions=None, roi_size=(64, 64, 64), device=None) -> list[dict[str, float]]:
    """MM-GAN's quality measure: Dice of a segmentor trained on real images, applied to images synthesised from
    real label maps, against those label maps (per region). Higher = the synthetic images carry the anatomy
    and lesions where the label map says."""
    return evaluate_segmentor(seg_net, synthetic_items, label_values, regions or BRATS_REGIONS, roi_size, device)


def paired_similarity(synthetic: Any, real: Any, label: Any) -> dict[str, float]:
    """SSIM and PSNR (MONAI ``SSIMMetric``/``PSNRMetric``) of a synthetic image against the real image of the same
    label map — the paired reference MM-GAN has for images made from real label maps. Both are z-scored inside
    the label map's foreground (background 0), so intensity scales do not matter; data range = the real
    image's range after that."""
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
    row. Writes the report and the synthetic volumes in ``output_dir``.
    """
    out = Path(output_dir)
    items = resolve_dataset(dataset_dir, out, label_values=label_values)
    use_group = group_key if group_key and all(group_key in it for it in items) else None
    train, test = split_datalist(items, val_fraction, seed, use_group, source=dataset_dir,
                                 remedy="add cases: val_fraction of them are held out")
    metrics = list(BRATS_REGIONS) + list(NO_SIM)
    dev = resolve_device(device)
    if seg_ckpt_path:
        seg = load_weights(evaluation_unet(len(label_values), seg_channels).to(dev), seg_ckpt_path, dev)
    else:
        seg = train_segmentor(train, label_values, seg_iterations, patch_size, channels=seg_channels, seed=seed,
                              device=dev, desc="U-Net on real images")
        save_weights(seg, out / "segmentor.pt")
    rows = [dict(r, **NO_SIM) for r in evaluate_segmentor(seg, test, label_values, BRATS_REGIONS, roi_size, dev)]
    runs = {REFERENCE: [single_run(REFERENCE, rows, len(train))]}
    gens = {WITH_POOL: ckpt_path, **({WITHOUT_POOL: ckpt_path_nopool} if ckpt_path_nopool else {})}
    labels_only = [{"label": it["label"]} for it in test]
    real_of = {os.path.abspath(str(ref["label"])): ref for ref in test}
    for i, (name, ck) in enumerate(gens.items()):
        sdir = out / f"synthetic_{i}"
        synthesize(labels_only, ck, sdir, roi_size=list(roi_size), gen_channels=list(gen_channels), seed=seed,
                   device=str(dev), overwrite=True, label_values=list(label_values))
        synth = load_datalist(sdir / "datalist.json")
        rows = synthesis_quality(seg, synth, label_values, BRATS_REGIONS, roi_size, dev)
        for row, it in zip(rows, synth):
            ref = real_of.get(os.path.abspath(str(it["source"])))
            row.update(paired_similarity(it["image"], ref["image"], ref["label"]) if ref else NO_SIM)
        runs[name] = [single_run(name, rows, len(train))]
    note = (f"Segmentor: MONAI 3D U-Net {list(seg_channels)}, {seg_iterations} iterations on {len(train)} real cases "
            f"(seed {seed}); test: {len(test)} held-out cases; device {dev}. Dice = 2|x.y|/(|x|^2+|y|^2). SSIM / PSNR: "
            "synthetic vs the real image of the same label map, both z-scored inside the label map's foreground.")
    res = write_report(out, "MM-GAN synthesis quality (Dice of a real-trained U-Net on synthetic images)", runs,
                       metrics, note)
    print(res["table"])
    return res


def cycle_shape_scores(
    test_a: Any,
    test_b: Any,
    ckpt_dir: str,
    output_dir: str,
    generator: torch.nn.Module,
    segmentor: torch.nn.Module,
    ref_dir: str | None = None,
    num_classes: int = 5,
    label_map_a: Mapping | None = None,
    label_map_b: Mapping | None = None,
    intensity_a: Mapping | None = None,
    intensity_b: Mapping | None = None,
    roi_size: Sequence[int] = (96, 96, 32),
    overlap: float = 0.5,
    spatial_dims: int = 3,
    device: Any = None,
    title: str = "cycle/shape GAN",
) -> dict[str, Any]:
    """P2's measures on held-out real volumes of both domains.

    - S-score (Sec. 4.2): mean foreground Dice (``mean_foreground_dice``, as the training-time validation) of a
      segmentor trained on the *target* domain's real data (``ref_dir``'s ``model_s_a.pt``/``model_s_b.pt``: use
      a ``cyclegan``-mode run, whose S saw real data only) applied to the translated volumes G_B(x_A) (resp.
      G_A(x_B)), against the source label.
    - Segmentation Dice of this run's S_A on real A and S_B on real B.
    ``ckpt_dir`` holds ``model.pt`` (G_B), ``model_g_a.pt``, ``model_s_a.pt``, ``model_s_b.pt``; ``generator`` and
    ``segmentor`` are the training run's network definitions (copied for each set of weights). Every volume goes
    through sliding windows of ``roi_size`` (``volgan.inferers``).
    """
    dev = resolve_device(device)
    ckpt, ref = Path(ckpt_dir), Path(ref_dir or ckpt_dir)

    def load(template: torch.nn.Module, path: Path) -> torch.nn.Module:
        return load_weights(copy.deepcopy(template).to(dev), path, dev).eval()

    g_b, g_a = load(generator, ckpt / "model.pt"), load(generator, ckpt / "model_g_a.pt")
    seg = {k: load(segmentor, d / f"model_s_{x}.pt")
           for k, d, x in (("s_a", ckpt, "a"), ("s_b", ckpt, "b"), ("ref_a", ref, "a"), ("ref_b", ref, "b"))}
    inferer = sliding_window_inferer(roi_size, 1, overlap)
    translate = synthesis_inferer(roi_size, overlap, getattr(generator, "norm_stats", "instance"))
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in CYCLESHAPE_METRICS}
    for items, intensity, mapping, gen, ref_seg, own_seg, s_key, d_key in (
        (test_a, intensity_a, label_map_a, g_b, seg["ref_b"], seg["s_a"], S_SCORE_A2B, DICE_S_A),
        (test_b, intensity_b, label_map_b, g_a, seg["ref_a"], seg["s_b"], S_SCORE_B2A, DICE_S_B),
    ):
        xf = domain_transforms(intensity or {}, mapping, num_classes, None, spatial_dims)
        for it in load_datalist(items):
            d = xf({"image": it["image"], "label": it["label"]})
            x, lab = torch.as_tensor(d["image"]).float(), torch.as_tensor(d["label"])[0].long()
            fake = predict(gen, x, translate, dev)[0]
            rows[s_key].append({"case": it["image"], MEAN_FG_DICE: mean_foreground_dice(
                predict_labels(ref_seg, fake, inferer, dev), lab, num_classes)})
            rows[d_key].append({"case": it["image"], MEAN_FG_DICE: mean_foreground_dice(
                predict_labels(own_seg, x, inferer, dev), lab, num_classes)})
    runs = {k: [single_run(k, v)] for k, v in rows.items()}
    res = write_report(output_dir, f"{title}: S-score and segmentation Dice", runs, [MEAN_FG_DICE],
                       f"checkpoints {ckpt}; S-score reference segmentors {ref}; device {dev}.")
    res["scores"] = {k: res["results"][k]["summary"][MEAN_FG_DICE][0] for k in CYCLESHAPE_METRICS}
    print(res["table"])
    return res


def generation_distances(slices: Any, generator: torch.nn.Module, extractor: Any, gen_ckpt_path: str | None,
                         seed: int = 0) -> dict[str, Any]:
    """P4 Sec. III-A: FID and MMD of generated vs real foreground slices (``conditional_generation_distances``) with
    the generator's weights at ``gen_ckpt_path``; ``{"skipped": ...}`` when there is no generator there (a
    real-only baseline run)."""
    if not gen_ckpt_path or not os.path.isfile(gen_ckpt_path):
        return {"skipped": f"no generator at {gen_ckpt_path}"}
    return conditional_generation_distances(slices, generator, extractor, gen_ckpt_path, int(seed))


def slicewise_dice(items: Any, network: Any, ckpt_path: str, output_dir: str, foreground: Sequence[int] | None = None,
                   image_size: Sequence[int] | None = (256, 256), axis: int = 2, keep_largest: bool = True,
                   device: Any = None, title: str = "2D segmentor, slice-wise",
                   generation: Mapping[str, Any] | None = None, window: Sequence[int] | None = None) -> dict[str, Any]:
    """3D Dice, HD95 and maximum Hausdorff distance (MONAI, in voxels) of a 2D segmentor (``network`` with the
    weights of ``ckpt_path``) run slice by slice over held-out volumes (``SlicewiseInferer``, the 2D preprocessing
    of training) and stacked back (P3, P5), after the optional largest-connected-component filter (P5 keeps only
    the largest component); ``window``: the crop size of a network trained on crops (sliding windows per slice).
    ``generation``: P4's feature distances of generated vs real slices
    (``conditional_generation_distances``), written to ``generation.json`` and added as columns."""
    dev = resolve_device(device)
    net = load_weights(network.to(dev), ckpt_path, dev)
    inferer = SlicewiseInferer(image_size, axis, 8, window)
    rows = []
    for it in resolve_dataset(items, output_dir, validate=False):
        img = torch.as_tensor(np.asarray(load_volume(it["image"])), dtype=torch.float32)
        lab = torch.as_tensor(np.asarray(load_volume(it["label"]))).long()
        fg = lab > 0 if foreground is None else torch.isin(lab, torch.as_tensor(list(foreground)))
        pred = predict_labels(net, scale_to_unit_range(img)[None], inferer, dev)
        if keep_largest:
            pred = KeepLargestConnectedComponent(applied_labels=[1])(pred[None])[0]
        p, t = (pred == 1)[None, None].float(), fg[None, None].float()
        both = bool(p.any()) and bool(t.any())
        hd95 = float(compute_hausdorff_distance(p, t, percentile=95)[0, 0]) if both else float("nan")
        hdmax = float(compute_hausdorff_distance(p, t)[0, 0]) if both else float("nan")
        rows.append({"case": it["image"], "Dice": dice_paper(p, t), "HD95 (voxels)": hd95, "HD max (voxels)": hdmax})
    metrics = list(SLICEWISE_METRICS)
    if generation is not None:
        atomic_write_json(Path(output_dir) / "generation.json", dict(generation))
        if "mmd" in generation:
            rows = [dict(r, **{col: generation[k] for k, col in GENERATION_METRICS.items()}) for r in rows]
            metrics += list(GENERATION_METRICS.values())
    res = write_report(output_dir, title, {HELD_OUT: [single_run(HELD_OUT, rows)]}, metrics,
                       f"checkpoint {ckpt_path}; device {dev}", generation=dict(generation or {}))
    print(res["table"])
    return res
