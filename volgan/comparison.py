"""One harness for what synthetic data buys: the same segmentor, budget and seeds under the settings the papers
compare, with tables, CSV, plots and a learning-curve mode (issue #10).

- ``compare_segmentation``: 3D (image, label) pairs, a synthesiser's output as a datalist. Settings: real only,
  synthetic only, real + 100/300/500 % synthetic (MM-GAN Sec. V-D, Table IV), synthetic pre-training then
  fine-tuning on a fraction of the real cases (MM-GAN: 10 %).
- ``compare_bundle_settings``: methods whose comparison lives inside a bundle (P3's modes, P5's ratios, P4 with
  or without the augmenter): each setting is a set of bundle overrides; train.yaml then evaluate.yaml.
- ``learning_curve``: Dice vs number of real training cases, with and without synthetic data.

Every (setting, seed) result is written to ``output_dir/runs/<setting>_seed<k>.json`` as soon as it exists and is
not recomputed (resumable); the outputs are ``results.csv``, ``results.md`` and ``dice.png``.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from volgan.errors import VolganConfigError
from volgan.utils import atomic_write_json

__all__ = ["SETTINGS", "compare_segmentation", "compare_bundle_settings", "learning_curve", "aggregate",
           "write_outputs", "BUNDLE_SETTINGS", "compare_cycleshape", "CYCLESHAPE_MODES"]

#: the settings of ``compare_segmentation`` (MM-GAN's Table IV plus synthetic-only and pre-train + fine-tune)
SETTINGS = ("real", "synthetic", "real+100%", "real+300%", "real+500%", "pretrain+finetune")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "setting"


def _cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Resumability: the stored result of a (setting, seed), or compute and store it atomically."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    t0 = time.time()
    res = compute()
    res["seconds"] = time.time() - t0
    atomic_write_json(path, res)
    return res


def compare_segmentation(
    real_train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    synthetic: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    settings: Sequence[str] = SETTINGS,
    seeds: Sequence[int] = (0,),
    label_values: Sequence[int] = (0, 1, 2, 3, 4),
    regions: Mapping[str, Sequence[int]] | None = None,
    iterations: int = 200,
    finetune_fraction: float = 0.1,
    finetune_iterations: int | None = None,
    segmentor: Mapping[str, Any] | None = None,
    roi_size: Sequence[int] = (64, 64, 64),
    device: Any = None,
    progress: Any = "auto",
    title: str = "real vs real + synthetic",
) -> dict[str, Any]:
    """Train the same 3D segmentor (``volgan.segmentation.train_segmentor``; ``segmentor``: its ``channels``,
    ``patch_size``, ``batch_size``, ``lr``, ``betas``) for ``iterations`` under each setting and seed, and
    evaluate Dice and HD95 per region on ``test``. ``pretrain+finetune`` trains on the synthetic pairs, then
    fine-tunes on ``finetune_fraction`` of the real cases (at least one) for ``finetune_iterations``
    (default ``iterations // 2``). Returns the aggregated results (also written to ``output_dir``)."""
    from tqdm.auto import tqdm

    from volgan.data.mixing import mix_datalists
    from volgan.metrics import BRATS_REGIONS
    from volgan.segmentation import evaluate_segmentor, train_segmentor
    from volgan.utils import as_bool

    regions = dict(regions or BRATS_REGIONS)
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise VolganConfigError(f"unknown setting(s) {unknown}; choose from {list(SETTINGS)}")
    if not real_train or not test:
        raise VolganConfigError("compare_segmentation needs real training cases and test cases")
    needs_syn = [s for s in settings if s != "real"]
    if needs_syn and not synthetic:
        raise VolganConfigError(f"settings {needs_syn} need synthetic pairs; none given")
    seg = dict(segmentor or {})
    out = Path(output_dir)
    bar = tqdm(total=len(settings) * len(seeds), desc="settings", disable=not _show(progress, as_bool))
    runs: dict[str, list[dict]] = {}
    for seed in seeds:
        for name in settings:
            def compute(name: str = name, seed: int = seed) -> dict[str, Any]:
                def train(items, **kw):
                    return train_segmentor(items, label_values, kw.pop("iterations", iterations), seed=seed,
                                           device=device, progress=False, **seg, **kw)

                if name == "real":
                    items, net = real_train, train(real_train)
                elif name == "synthetic":
                    items, net = synthetic, train(synthetic)
                elif name.startswith("real+"):
                    items = mix_datalists(real_train, synthetic, float(name[5:-1]), seed=seed)
                    net = train(items)
                else:  # pretrain+finetune
                    k = max(1, int(math.ceil(len(real_train) * finetune_fraction)))
                    idx = sorted(np.random.RandomState(seed).permutation(len(real_train))[:k])
                    items = [real_train[i] for i in idx]
                    net = train(items, network=train(synthetic),
                                iterations=finetune_iterations or max(1, iterations // 2))
                rows = evaluate_segmentor(net, test, label_values, regions, roi_size, device, hd95=True)
                return {"setting": name, "seed": seed, "n_train": len(items), "n_test": len(test), "rows": rows}

            runs.setdefault(name, []).append(_cached(out / "runs" / f"{_slug(name)}_seed{seed}.json", compute))
            bar.update(1)
    bar.close()
    metrics = list(regions) + [f"HD95 {r}" for r in regions]
    return write_outputs(out, title, runs, metrics, note=f"seeds {list(seeds)}; {iterations} iterations per "
                         f"setting; segmentor {seg or 'defaults'}")


def _show(progress: Any, as_bool: Callable) -> bool:
    import os
    import sys

    if progress == "auto":
        return sys.stderr.isatty() and not os.environ.get("CI")
    return as_bool(progress)


def aggregate(runs: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str]) -> dict[str, dict]:
    """Per setting: the mean over test cases for each seed, then mean and sd over seeds (the spread that matters
    for "does synthetic data help"); NaN cases (region absent in both) are skipped."""
    out = {}
    for name, per_seed in runs.items():
        per = {m: [] for m in metrics}
        for r in per_seed:
            for m in metrics:
                vals = [row[m] for row in r["rows"] if m in row and not math.isnan(row[m])]
                if vals:
                    per[m].append(float(np.mean(vals)))
        out[name] = {
            "n_train": per_seed[0].get("n_train", ""), "n_test": per_seed[0].get("n_test", ""),
            "seeds": [r.get("seed") for r in per_seed],
            "seconds": float(np.mean([r.get("seconds", float("nan")) for r in per_seed])),
            "summary": {m: ((float(np.mean(v)), float(np.std(v))) if v else (float("nan"), float("nan")))
                        for m, v in per.items()},
        }
    return out


def write_outputs(out: Path, title: str, runs: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str],
                  note: str = "") -> dict[str, Any]:
    """``results.csv`` (one row per setting, seed and case), ``results.md`` (mean ± sd over seeds), ``results.json``
    and ``dice.png`` (the first metric per setting with error bars)."""
    agg = aggregate(runs, metrics)
    head = "| setting | train | test | " + " | ".join(metrics) + " | time (s) |"
    lines = [head, "|---|---:|---:|" + "---:|" * (len(metrics) + 1)]
    for name, a in agg.items():
        cells = [f"{a['summary'][m][0]:.3f} ± {a['summary'][m][1]:.3f}" for m in metrics]
        lines.append(f"| {name} | {a['n_train']} | {a['n_test']} | " + " | ".join(cells) + f" | {a['seconds']:.0f} |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(f"# {title}\n\n{note}\n\n{table}\n", encoding="utf-8")
    atomic_write_json(out / "results.json", {"title": title, "note": note, "results": agg})
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["setting", "seed", "case", *metrics])
        for name, per_seed in runs.items():
            for r in per_seed:
                for row in r["rows"]:
                    w.writerow([name, r.get("seed"), row.get("case"), *[row.get(m, "") for m in metrics]])
    _plot(out / "dice.png", agg, metrics[0], title)
    return {"results": agg, "table": table, "runs": runs}


def _plot(path: Path, agg: Mapping[str, Mapping[str, Any]], metric: str, title: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend (e.g. Jupyter's inline) stays as it is

    names = list(agg)
    mean = [agg[n]["summary"][metric][0] for n in names]
    sd = [agg[n]["summary"][metric][1] for n in names]
    fig = Figure(figsize=(1.2 + 1.1 * len(names), 3.2))
    ax = fig.subplots()
    ax.bar(range(len(names)), mean, yerr=sd, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


#: the comparisons each 2D bundle runs inside itself (overrides per setting)
BUNDLE_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    "gan_pretrain_seg_2d": {m: {"mode": m} for m in ("real_only", "elastic", "gan_mix", "gan_pretrain", "ours")},
    "wgan_pairs_seg_2d": {f"{r} {'aug' if a else 'no aug'}": {"ratio": r, "augment": a}
                          for a in (False, True) for r in ("16-0", "8-8", "0-16")},
    "adversarial_unet_aug_2d": {"without augmenter": {"augment_with_gan": False},
                                "with augmenter": {"augment_with_gan": True}},
}

#: (setting that trains the GAN, settings that reuse it): same GAN, same seed, only the downstream use differs
GAN_SHARING: dict[str, tuple[str, tuple[str, ...]]] = {
    "gan_pretrain_seg_2d": ("gan_mix", ("gan_pretrain",)),
    "wgan_pairs_seg_2d": ("8-8 no aug", ("0-16 no aug", "8-8 aug", "0-16 aug")),
}

#: evaluate.yaml needs these train overrides too (network shape, slice size, structure)
_EVAL_KEYS = ("foreground", "image_size", "slice_axis", "seg_kind", "seg_channels", "unet_channels", "num_classes",
              "device", "gen_channels", "latent_dim", "noise_channels", "convs_per_block", "gen_norm")


def compare_bundle_settings(
    bundle: str,
    train: Any,
    test: Any,
    output_dir: str | Path,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    seeds: Sequence[int] = (0,),
    common: Mapping[str, Any] | None = None,
    share_gan: tuple[str, Sequence[str]] | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """Run ``bundle``'s train.yaml under each setting (``settings``: name -> overrides, default
    ``BUNDLE_SETTINGS[bundle]``; ``common`` overrides for all) and seed, then its evaluate.yaml on ``test``
    (Dice, HD95 of the stacked slice-wise predictions). ``share_gan``: (a setting, later settings) — the later
    ones reuse the first one's trained GAN (``<run>/gan``, resumed as finished), so a comparison of downstream
    uses of one GAN does not retrain it (default ``GAN_SHARING[bundle]``; settings that train their GAN
    differently, e.g. P3's joint ``ours``, are never in the list)."""
    import shutil

    from volgan.bundle import run_bundle

    settings = dict(settings or BUNDLE_SETTINGS.get(bundle) or {})
    share_gan = share_gan if share_gan is not None else GAN_SHARING.get(bundle)
    if not settings:
        raise VolganConfigError(f"no settings for bundle {bundle!r}; pass settings=")
    common = dict(common or {})
    out = Path(output_dir)
    runs: dict[str, list[dict]] = {}
    for seed in seeds:
        for name, ov in settings.items():
            run = out / f"seed{seed}" / _slug(name)
            kw = {**common, **ov, "seed": seed}

            def compute(run: Path = run, kw: dict = kw, name: str = name, seed: int = seed) -> dict[str, Any]:
                if share_gan and name in share_gan[1]:
                    src = out / f"seed{seed}" / _slug(share_gan[0]) / "gan"
                    if src.is_dir() and not (run / "gan").exists():
                        shutil.copytree(src, run / "gan")
                run_bundle(bundle, "train", dataset_dir=train, output_dir=str(run), **kw)
                run_bundle(bundle, "evaluate", dataset_dir=test, ckpt_path=str(run / "model.pt"),
                                output_dir=str(run / "eval"), **{k: kw[k] for k in _EVAL_KEYS if k in kw})
                res = json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))["results"]
                held = res["held-out volumes"]
                rows = held["rows"]
                gen_file = run / "eval" / "generation.json"  # P4: FID / MMD of generated vs real slices
                gen = json.loads(gen_file.read_text(encoding="utf-8")) if gen_file.is_file() else {}
                if "mmd" in gen:
                    rows = [dict(r, **{"MMD (features)": gen["mmd"], "FID (features)": gen["fid"]}) for r in rows]
                return {"setting": name, "seed": seed, "n_train": "", "n_test": held["n_test"], "rows": rows}

            runs.setdefault(name, []).append(_cached(out / "runs" / f"{_slug(name)}_seed{seed}.json", compute))
    metrics = ["Dice", "HD95 (voxels)"]
    if any("MMD (features)" in row for rs in runs.values() for r in rs for row in r["rows"]):
        metrics += ["MMD (features)", "FID (features)"]
    return write_outputs(out, title or f"{bundle}: segmentation by setting", runs, metrics,
                         note=f"seeds {list(seeds)}; common overrides {common}")


#: P2's comparison (Sec. 4.2, Table 1): CycleGAN, then segmentors trained on translated data afterwards (ada),
#: then joint training with the shape-consistency loss (ours); cyclegan's real-data segmentors score the S-score
CYCLESHAPE_MODES = ("cyclegan", "ada", "ours")
_CYCLESHAPE_EVAL_KEYS = ("num_classes", "label_map_a", "label_map_b", "intensity_a", "intensity_b", "gen_channels",
                         "seg_kind", "seg_channels", "roi_size", "spatial_dims", "device")
CYCLESHAPE_METRICS = ("S-score A->B", "S-score B->A", "Dice S_A (real A)", "Dice S_B (real B)")


def compare_cycleshape(
    train_a: Any, train_b: Any, test_a: Any, test_b: Any, output_dir: str | Path,
    modes: Sequence[str] = CYCLESHAPE_MODES, seeds: Sequence[int] = (0,), common: Mapping[str, Any] | None = None,
    title: str = "cycleshape_ct_mri_3d: cycle/shape GAN modes",
) -> dict[str, Any]:
    """P2 under the harness: for each seed, train ``cycleshape_ct_mri_3d`` in each mode on unpaired
    (``train_a``, ``train_b``) with the same budget, then score held-out real volumes of both domains with its
    evaluate.yaml: S-score both directions (reference segmentors: the same seed's ``cyclegan`` run, trained on
    real data only) and the Dice of each run's own S_A / S_B. Finished (mode, seed) runs are not redone."""
    from volgan.bundle import run_bundle

    modes = list(modes)
    if "cyclegan" not in modes:
        raise VolganConfigError("compare_cycleshape needs the 'cyclegan' mode: its segmentors are the S-score reference")
    modes.sort(key=lambda m: m != "cyclegan")  # the reference first
    common = dict(common or {})
    out = Path(output_dir)
    runs: dict[str, list[dict]] = {}
    for seed in seeds:
        ref = out / f"seed{seed}" / "cyclegan"
        for mode in modes:
            run = out / f"seed{seed}" / _slug(mode)

            def compute(run: Path = run, mode: str = mode, seed: int = seed, ref: Path = ref) -> dict[str, Any]:
                kw = {**common, "mode": mode, "seed": seed}
                run_bundle("cycleshape_ct_mri_3d", "train", domain_a=train_a, domain_b=train_b, output_dir=str(run),
                           **kw)
                run_bundle("cycleshape_ct_mri_3d", "evaluate", test_a=test_a, test_b=test_b, ckpt_dir=str(run),
                           ref_dir=str(ref), output_dir=str(run / "eval"),
                           **{k: kw[k] for k in _CYCLESHAPE_EVAL_KEYS if k in kw})
                res = json.loads((run / "eval" / "results.json").read_text(encoding="utf-8"))["results"]
                row = {m: res[m]["summary"]["mean fg Dice"][0] for m in CYCLESHAPE_METRICS}
                return {"setting": mode, "seed": seed, "n_train": "", "n_test": res[CYCLESHAPE_METRICS[0]]["n_test"],
                        "rows": [row]}

            runs.setdefault(mode, []).append(_cached(out / "runs" / f"{_slug(mode)}_seed{seed}.json", compute))
    return write_outputs(out, title, runs, list(CYCLESHAPE_METRICS),
                         note=f"seeds {list(seeds)}; mean foreground Dice; common overrides {common}")


def learning_curve(
    real_train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    synthetic: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    sizes: Sequence[int] | None = None,
    percent: float = 100.0,
    metric: str | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Dice vs number of real training cases (``sizes``, default 1, 2, 4, ... up to all), real only vs real +
    ``percent`` % synthetic. Synthetic pairs carrying a ``source`` (volgan's synthesis datalists do) are restricted
    to those made from the chosen real label maps, so a point never uses synthetic data derived from cases it
    does not have. ``metric``: the column plotted (default ``WT`` when present, else the first). Writes
    ``learning_curve.csv/.md/.png`` into ``output_dir``; ``kwargs`` go to ``compare_segmentation`` (seeds,
    iterations, segmentor, ...)."""
    import os

    n = len(real_train)
    sizes = sorted({int(s) for s in (sizes or [2**k for k in range(int(math.log2(max(n, 1))) + 1)] + [n]) if 0 < s <= n})
    out = Path(output_dir)
    setting = f"real+{percent:g}%"
    points = []
    for k in sizes:
        chosen = list(real_train[:k])
        labels = {os.path.abspath(str(it["label"])) for it in chosen}
        syn = [s for s in synthetic if "source" not in s or os.path.abspath(str(s["source"])) in labels]
        res = compare_segmentation(chosen, test, syn, out / f"n{k}", settings=("real", setting), **kwargs)
        summary = next(iter(res["results"].values()))["summary"]
        col = metric or ("WT" if "WT" in summary else next(iter(summary)))
        points.append({"n_real": k, "metric": col, **{
            s: res["results"][s]["summary"][col] for s in ("real", setting)}})
    lines = [f"| real cases | real only ({points[0]['metric']}) | {setting} |", "|---:|---:|---:|"]
    lines += [f"| {p['n_real']} | {p['real'][0]:.3f} ± {p['real'][1]:.3f} | {p[setting][0]:.3f} ± {p[setting][1]:.3f} |"
              for p in points]
    table = "\n".join(lines)
    (out / "learning_curve.md").write_text(table + "\n", encoding="utf-8")
    with open(out / "learning_curve.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["n_real", "setting", "mean", "sd"])
        for p in points:
            for s in ("real", setting):
                w.writerow([p["n_real"], s, *p[s]])
    _plot_curve(out / "learning_curve.png", points, setting)
    return {"points": points, "table": table}


def _plot_curve(path: Path, points: Sequence[Mapping[str, Any]], setting: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend stays as it is

    fig = Figure(figsize=(4.5, 3.2))
    ax = fig.subplots()
    x = [p["n_real"] for p in points]
    for s, label in (("real", "real only"), (setting, setting)):
        ax.errorbar(x, [p[s][0] for p in points], yerr=[p[s][1] for p in points], marker="o", capsize=3, label=label)
    ax.set_xlabel("real training cases")
    ax.set_ylabel(points[0]["metric"] if points else "Dice")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def evaluate_bundle(bundle: str, dataset: Any, output_dir: str | Path, ckpt_path: str | None = None,
                    test: Any = None, test_fraction: float = 0.25, seeds: Sequence[int] = (0,), copies: int = 5,
                    device: Any = "cpu", quick: bool = False, **kwargs: Any) -> dict[str, Any]:
    """``volgan evaluate --bundle NAME``: split ``dataset`` by case (or use ``test``), then

    - ``mmgan_label2mri_3d``: synthesise ``copies`` perturbed pairs per training label map with the generator
      ``ckpt_path`` and run ``compare_segmentation`` (real, synthetic, real + 100/300/500 %, pre-train + fine-tune);
    - ``cycleshape_ct_mri_3d``: ``dataset`` is domain A, ``dataset_b`` (or ``test_b``) domain B, each split by
      case; ``compare_cycleshape`` over the modes cyclegan / ada / ours (S-score and segmentation Dice);
    - the 2D bundles: ``compare_bundle_settings`` with the bundle's own settings (``BUNDLE_SETTINGS``).

    ``quick`` shrinks every budget (a smoke run); ``kwargs`` go to the comparison function."""
    from volgan.data.dataset import resolve_dataset, split_datalist
    from volgan.inference import synthesize_augmentations

    out = Path(output_dir)
    items = resolve_dataset(dataset, out)
    if test is None:
        train_items, test_items = split_datalist(items, test_fraction, int(seeds[0]), group_key=None)
    else:
        train_items, test_items = items, resolve_dataset(test, out)
    if bundle == "mmgan_label2mri_3d":
        if ckpt_path is None:
            raise VolganConfigError("mmgan_label2mri_3d needs --ckpt-path: a trained generator (model.pt)")
        syn_dir = out / "synthetic"
        overrides = {"device": device, **({"gen_channels": kwargs.pop("gen_channels")} if "gen_channels" in kwargs else {})}
        if (syn_dir / "datalist.json").is_file():
            from volgan.data.datalist import load_datalist

            synthetic = load_datalist(syn_dir / "datalist.json")
        else:
            synthetic = synthesize_augmentations([{"label": it["label"]} for it in train_items], ckpt_path, syn_dir,
                                                 copies=copies, seed=int(seeds[0]), **overrides)
        if quick:
            kwargs = {"iterations": 4, "segmentor": {"channels": [4, 8, 16, 32], "patch_size": [16, 16, 16]},
                      "roi_size": [32, 32, 32], **kwargs}
        return compare_segmentation(train_items, test_items, synthetic, out / "comparison", seeds=seeds,
                                    device=device, title=f"{bundle}: real vs synthetic settings", **kwargs)
    if bundle == "cycleshape_ct_mri_3d":
        dataset_b, test_b = kwargs.pop("dataset_b", None), kwargs.pop("test_b", None)
        if dataset_b is None:
            raise VolganConfigError("cycleshape_ct_mri_3d needs --dataset-b: the second (unpaired) domain, e.g. MRI")
        items_b = resolve_dataset(dataset_b, out)
        if test_b is None:
            train_b, test_b_items = split_datalist(items_b, test_fraction, int(seeds[0]), group_key=None)
        else:
            train_b, test_b_items = items_b, resolve_dataset(test_b, out)
        common = dict(kwargs.pop("common", {}) or {}, device=device)
        if quick:
            common = {**QUICK_CYCLESHAPE, **common}
        names = kwargs.pop("settings", None) or CYCLESHAPE_MODES
        bad = [n for n in names if n not in CYCLESHAPE_MODES]
        if bad:
            raise VolganConfigError(f"unknown setting(s) {bad} of {bundle}; choose from {list(CYCLESHAPE_MODES)}")
        kwargs.pop("iterations", None)
        return compare_cycleshape(train_items, train_b, test_items, test_b_items, out / "comparison", modes=names,
                                  seeds=seeds, common=common, **kwargs)
    if bundle in BUNDLE_SETTINGS:
        names = kwargs.pop("settings", None)
        if names is not None:
            bad = [n for n in names if n not in BUNDLE_SETTINGS[bundle]]
            if bad:
                raise VolganConfigError(f"unknown setting(s) {bad} of {bundle}; choose from {list(BUNDLE_SETTINGS[bundle])}")
            kwargs["settings"] = {n: BUNDLE_SETTINGS[bundle][n] for n in names}
        common = dict(kwargs.pop("common", {}) or {}, device=device)
        if quick:
            common = {**QUICK_2D.get(bundle, {}), **common}
        return compare_bundle_settings(bundle, train_items, test_items, out / "comparison", seeds=seeds,
                                       common=common, **kwargs)
    raise VolganConfigError(f"volgan evaluate supports {['mmgan_label2mri_3d', 'cycleshape_ct_mri_3d', *BUNDLE_SETTINGS]}; for "
                            f"{bundle!r} run its configs/evaluate.yaml")


#: smoke-run sizes of the cycle/shape bundle (``--quick``)
QUICK_CYCLESHAPE: dict[str, Any] = dict(patch_size=[16, 16, 16], gen_channels=[8, 16, 32, 32], disc_channels=[8, 16, 16, 16],
                                        disc_strides=[2, 2, 1, 1], seg_channels=[8, 16, 32, 64], max_epochs=2,
                                        pretrain_s_epochs=1, pretrain_gd_epochs=1, roi_size=[16, 16, 16], amp=False,
                                        pool_size=2)

#: smoke-run sizes of the 2D bundles (the test suite and ``--quick``)
QUICK_2D: dict[str, dict[str, Any]] = {
    "gan_pretrain_seg_2d": dict(image_size=[32, 32], ngf=8, n_blocks=2, disc_channels=[8, 16, 16, 16],
                                disc_strides=[2, 2, 1, 1], seg_channels=[8, 16, 32, 64], gan_epochs=1,
                                finetune_epochs=1, synthetic_copies=1, amp=False),
    "wgan_pairs_seg_2d": dict(image_size=[32, 32], gen_channels=32, critic_channels=8, unet_channels=[8, 8, 8],
                              gan_iterations=4, max_epochs=2, val_interval=2, patience_iterations=100, amp=False),
    "adversarial_unet_aug_2d": dict(image_size=[32, 32], gen_channels=[4, 8, 8], critic_features=4, critic_growth=4,
                                    critic_blocks=[1, 1, 1, 1], unet_channels=[8, 8, 8], gan_batch_size=4,
                                    gan_iterations=2, max_epochs=2, val_interval=2, amp=False),
}

__all__ += ["evaluate_bundle", "QUICK_2D", "GAN_SHARING"]
