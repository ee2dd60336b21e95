"""One harness for what synthetic data buys: the same segmentor, budget and seeds under the settings the papers
compare; the demo, ``volgan evaluate`` and the experiments all run it.

- ``compare_segmentation``: 3D (image, label) pairs and a synthesiser's output as a datalist. Settings: real only,
  synthetic only, real + 100/300/500 % synthetic (MM-GAN Sec. V-D, Table IV), synthetic pre-training then
  fine-tuning on a fraction of the real cases (MM-GAN: 10 %).
- ``compare_bundle_settings``: methods whose comparison lives inside a bundle (P3's modes, P5's ratios, P4 with
  or without the augmenter): each setting is a set of bundle overrides; train.yaml, then evaluate.yaml merged
  onto it with the same overrides.
- ``compare_cycleshape``: P2's modes on two unpaired domains, the cyclegan run's segmentors as the S-score reference.
- ``learning_curve``: Dice vs number of real training cases, with and without synthetic data.
- ``evaluate_bundle``: ``volgan evaluate``, dispatching on ``volgan.evaluation.registry.METHODS``.

Every (setting, seed) result is written to ``output_dir/runs/<setting>_seed<k>.json`` as soon as it exists and is
not recomputed (resumable); the report is ``volgan.evaluation.report.write_report``'s.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from volgan.bundle import run_bundle
from volgan.config import as_bool
from volgan.data.dataset import resolve_dataset, split_datalist
from volgan.data.datalist import load_datalist
from volgan.data.mixing import mix_datalists
from volgan.errors import VolganConfigError
from volgan.evaluation.metrics import BRATS_REGIONS
from volgan.evaluation.quality import filter_pairs
from volgan.synthesis.label_to_image import gaussian_label_pairs
from volgan.evaluation.registry import CYCLESHAPE_MODES, FILTERED_SETTING, SEGMENTATION_SETTINGS, method
from volgan.evaluation.report import plot_curve, write_report
from volgan.evaluation.scores import CYCLESHAPE_METRICS, HELD_OUT
from volgan.evaluation.segmentor import evaluate_segmentor, train_segmentor
from volgan.io import atomic_write_json, save_weights
from volgan.synthesis import synthesize_augmentations

__all__ = ["compare_segmentation", "compare_bundle_settings", "compare_cycleshape", "learning_curve",
           "evaluate_bundle", "run_cached", "segmentor_weights"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "setting"


def run_cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Resumability: the stored result of a (setting, seed), or compute and store it atomically."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    t0 = time.time()
    res = compute()
    res["seconds"] = time.time() - t0
    atomic_write_json(path, res)
    return res


def segmentor_weights(output_dir: str | Path, setting: str, seed: int) -> Path:
    """Where ``compare_segmentation`` keeps the segmentor it trained for (``setting``, ``seed``)."""
    return Path(output_dir) / "runs" / f"{_slug(setting)}_seed{seed}.pt"


def _show(progress: Any) -> bool:
    if progress == "auto":
        return sys.stderr.isatty() and not os.environ.get("CI")
    return as_bool(progress)


def parse_setting(name: str) -> tuple[bool, str | None, float]:
    """(augment, pool, percent) of a ``compare_segmentation`` setting: ``real``, ``real+aug``, ``real+P%`` (GAN
    pairs), ``real+aug+P%``, ``real+P% gaussian``, ``real+100% filtered``, ``synthetic``, ``pretrain+finetune``."""
    if name in ("synthetic", "pretrain+finetune"):
        return False, "gan", 0.0
    m = re.fullmatch(r"real(\+aug)?(?:\+(\d+(?:\.\d+)?)%( gaussian| filtered)?)?", name)
    if m is None or (m.group(3) == " filtered" and m.group(2) != "100"):
        raise VolganConfigError(f"unknown setting {name!r}; choose from {list(SEGMENTATION_SETTINGS)}, real+aug, "
                                f"real+<P>%, real+aug+<P>%, real+<P>% gaussian or {FILTERED_SETTING!r}")
    pool = None if m.group(2) is None else ("gan" if m.group(3) is None else m.group(3).strip())
    return m.group(1) is not None, pool, float(m.group(2) or 0)


def compare_segmentation(
    real_train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    synthetic: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    settings: Sequence[str] = SEGMENTATION_SETTINGS,
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
    names: Mapping[str, str] | None = None,
    filtered: Sequence[Mapping[str, Any]] | None = None,
    gaussian: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Train the same 3D segmentor (``volgan.evaluation.segmentor.train_segmentor``; ``segmentor``: its
    ``channels``, ``patch_size``, ``batch_size``, ``lr``, ``betas``) for ``iterations`` under each setting and seed,
    and evaluate Dice and HD95 per region on ``test``. A setting ``real+P%`` adds P % synthetic pairs;
    ``pretrain+finetune`` trains on the synthetic pairs, then fine-tunes on ``finetune_fraction`` of the real cases
    (at least one) for ``finetune_iterations`` (default ``iterations // 2``). ``names``: how settings are shown
    in the report (default their own names). ``real+100% filtered`` adds as many pairs as ``real+100%``, drawn from
    ``filtered`` (the synthetic pairs the quality scores rank best, ``filter_pairs``); ``real+P% gaussian`` from
    ``gaussian`` (the per-label Gaussian baseline, ``volgan.synthesis.gaussian_label_pairs``); ``real+aug`` and
    ``real+aug+P%`` train with the standard augmentation baseline. Each trained segmentor is kept as
    ``runs/<setting>_seed<k>.pt`` (``segmentor_weights``). Returns the report (also written to ``output_dir``)."""
    regions = dict(regions or BRATS_REGIONS)
    parsed = {s: parse_setting(s) for s in settings}
    if not real_train or not test:
        raise VolganConfigError("compare_segmentation needs real training cases and test cases")
    pools = {"gan": synthetic, "filtered": filtered, "gaussian": gaussian}
    for name, (_, pool, _) in parsed.items():
        if pool is not None and not pools[pool]:
            what = {"gan": "synthetic pairs", "filtered": "quality-filtered synthetic pairs",
                    "gaussian": "per-label Gaussian baseline pairs"}[pool]
            raise VolganConfigError(f"setting {name!r} needs {what}; none given")
    seg = dict(segmentor or {})
    names = dict(names or {})
    out = Path(output_dir)
    bar = tqdm(total=len(settings) * len(seeds), desc="settings", disable=not _show(progress))
    runs: dict[str, list[dict]] = {}
    for seed in seeds:
        for name in settings:
            def compute(name: str = name, seed: int = seed) -> dict[str, Any]:
                def train(items, **kw):
                    return train_segmentor(items, label_values, kw.pop("iterations", iterations), seed=seed,
                                           device=device, progress=False, **seg, **kw)

                augment, pool, percent = parsed[name]
                if name == "synthetic":
                    items, net = synthetic, train(synthetic)
                elif name != "pretrain+finetune":  # real [+aug] [+P % of a pool]
                    items = real_train if pool is None else mix_datalists(real_train, pools[pool], percent, seed=seed)
                    net = train(items, augment=augment)
                else:  # pretrain+finetune
                    k = max(1, int(math.ceil(len(real_train) * finetune_fraction)))
                    idx = sorted(np.random.RandomState(seed).permutation(len(real_train))[:k])
                    items = [real_train[i] for i in idx]
                    net = train(items, network=train(synthetic),
                                iterations=finetune_iterations or max(1, iterations // 2))
                save_weights(net, segmentor_weights(out, name, seed))
                rows = evaluate_segmentor(net, test, label_values, regions, roi_size, device, hd95=True)
                return {"setting": name, "seed": seed, "n_train": len(items), "n_test": len(test), "rows": rows}

            shown = names.get(name, name)
            runs.setdefault(shown, []).append(run_cached(out / "runs" / f"{_slug(name)}_seed{seed}.json", compute))
            bar.update(1)
    bar.close()
    metrics = list(regions) + [f"HD95 {r}" for r in regions]
    return write_report(out, title, runs, metrics, f"seeds {list(seeds)}; {iterations} iterations per setting; "
                        f"segmentor {seg or 'defaults'}", reference=names.get("real", "real"))


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
    """Run ``bundle``'s train.yaml under each setting (``settings``: name -> overrides, default the registry's;
    ``common`` overrides for all) and seed, then its evaluate.yaml merged onto train.yaml with the same overrides
    on ``test`` (Dice, HD95 of the stacked slice-wise predictions). ``share_gan``: (a setting, later settings) —
    the later ones reuse the first one's trained GAN (``<run>/gan``, resumed as finished), so a comparison of
    downstream uses of one GAN does not retrain it (default the registry's; settings that train their GAN
    differently, e.g. P3's joint ``ours``, are never in the list)."""
    entry = method(bundle)
    settings = dict(settings or entry.settings)
    share_gan = share_gan if share_gan is not None else entry.share_gan
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
                res = run_bundle(bundle, "evaluate", **{**kw, "dataset_dir": test, "output_dir": str(run),
                                                        "eval_dir": str(run / "eval")}).outputs[-1]
                rows = res["runs"][HELD_OUT][0]["rows"]
                return {"setting": name, "seed": seed, "n_train": "", "n_test": len(rows), "rows": rows,
                        "metrics": res["metrics"]}

            runs.setdefault(name, []).append(run_cached(out / "runs" / f"{_slug(name)}_seed{seed}.json", compute))
    metrics = list(dict.fromkeys(m for rs in runs.values() for r in rs for m in r.get("metrics", ["Dice"])
                                 if m != "HD max (voxels)"))
    return write_report(out, title or f"{bundle}: segmentation by setting", runs, metrics,
                        f"seeds {list(seeds)}; common overrides {common}", reference=entry.reference)


def compare_cycleshape(
    train_a: Any, train_b: Any, test_a: Any, test_b: Any, output_dir: str | Path,
    modes: Sequence[str] = CYCLESHAPE_MODES, seeds: Sequence[int] = (0,), common: Mapping[str, Any] | None = None,
    title: str = "cycleshape_ct_mri_3d: cycle/shape GAN modes",
    extra_tests: Mapping[str, tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """P2 under the harness: for each seed, train ``cycleshape_ct_mri_3d`` in each mode on unpaired
    (``train_a``, ``train_b``) with the same budget, then score held-out real volumes of both domains with its
    evaluate.yaml: S-score both directions (reference segmentors: the same seed's ``cyclegan`` run, trained on
    real data only) and the Dice of each run's own S_A / S_B. ``extra_tests``: more (A, B) sets scored the same
    way, their columns prefixed with the set's name (e.g. the training volumes: where the segmentors trained).
    Finished (mode, seed) runs are not redone."""
    entry = method("cycleshape_ct_mri_3d")
    modes = list(modes)
    if entry.reference not in modes:
        raise VolganConfigError(f"compare_cycleshape needs the {entry.reference!r} mode: its segmentors are the "
                                "S-score reference")
    modes.sort(key=lambda m: m != entry.reference)  # the reference first
    common = dict(common or {})
    tests = {"": (test_a, test_b), **dict(extra_tests or {})}
    out = Path(output_dir)
    runs: dict[str, list[dict]] = {}
    for seed in seeds:
        ref = out / f"seed{seed}" / entry.reference
        for mode in modes:
            run = out / f"seed{seed}" / _slug(mode)

            def compute(run: Path = run, mode: str = mode, seed: int = seed, ref: Path = ref) -> dict[str, Any]:
                kw = {**common, **entry.settings[mode], "seed": seed}
                run_bundle(entry.bundle, "train", domain_a=train_a, domain_b=train_b, output_dir=str(run), **kw)
                row, n_test = {}, 0
                for name, (ta, tb) in tests.items():
                    res = run_bundle(entry.bundle, "evaluate", **{
                        **kw, "test_a": ta, "test_b": tb, "output_dir": str(run), "ref_dir": str(ref),
                        "eval_dir": str(run / ("eval" if not name else f"eval_{_slug(name)}"))}).outputs[-1]
                    row.update({f"{name}: {k}" if name else k: v for k, v in res["scores"].items()})
                    n_test = n_test or res["results"][CYCLESHAPE_METRICS[0]]["n_test"]
                return {"setting": mode, "seed": seed, "n_train": "", "n_test": n_test, "rows": [row]}

            runs.setdefault(mode, []).append(run_cached(out / "runs" / f"{_slug(mode)}_seed{seed}.json", compute))
    metrics = [f"{name}: {m}" if name else m for name in tests for m in CYCLESHAPE_METRICS]
    return write_report(out, title, runs, metrics, f"seeds {list(seeds)}; mean foreground Dice; common overrides "
                        f"{common}")


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
    plot_curve(out / "learning_curve.png", points, (("real", "real only"), (setting, setting)))
    return {"points": points, "table": table}


def evaluate_bundle(bundle: str, dataset: Any, output_dir: str | Path, ckpt_path: str | None = None,
                    test: Any = None, test_fraction: float = 0.25, seeds: Sequence[int] = (0,), copies: int = 5,
                    device: Any = "cpu", quick: bool = False, **kwargs: Any) -> dict[str, Any]:
    """``volgan evaluate --bundle NAME``: split ``dataset`` by case (or use ``test``), then, by the method's
    registry entry (``volgan.evaluation.registry.METHODS``):

    - ``synthesis`` (MM-GAN): synthesise ``copies`` perturbed pairs per training label map with the generator
      ``ckpt_path`` and run ``compare_segmentation`` (real, synthetic, real + 100/300/500 %, pre-train + fine-tune);
    - ``unpaired`` (P2): ``dataset`` is domain A, ``dataset_b`` (or ``test_b``) domain B, each split by case;
      ``compare_cycleshape`` over the modes cyclegan / ada / ours (S-score and segmentation Dice);
    - ``settings`` (the 2D bundles): ``compare_bundle_settings`` with the bundle's own settings.

    ``quick`` shrinks every budget (a smoke run); ``kwargs`` go to the comparison function."""
    entry = method(bundle)
    out = Path(output_dir)
    items = resolve_dataset(dataset, out)
    if test is None:
        train_items, test_items = split_datalist(items, test_fraction, int(seeds[0]), group_key=None)
    else:
        train_items, test_items = items, resolve_dataset(test, out)
    names = kwargs.pop("settings", None)
    if names is not None:
        bad = [n for n in names if n not in entry.settings]
        if bad:
            raise VolganConfigError(f"unknown setting(s) {bad} of {bundle}; choose from {list(entry.settings)}")
    quick_kw = dict(entry.quick) if quick else {}
    if entry.harness == "synthesis":
        if ckpt_path is None:
            raise VolganConfigError(f"{bundle} needs --ckpt-path: a trained generator (model.pt)")
        syn_dir = out / "synthetic"
        overrides = {"device": device, **({"gen_channels": kwargs.pop("gen_channels")} if "gen_channels" in kwargs else {})}
        names = list(names) if names is not None else list(entry.settings)
        if FILTERED_SETTING in names:  # score every pair against the real training pairs
            overrides.update(quality_reference=[dict(image=it["image"], label=it["label"]) for it in train_items],
                             reject_copies=False)
        if (syn_dir / "datalist.json").is_file():
            synthetic = load_datalist(syn_dir / "datalist.json")
        else:
            synthetic = synthesize_augmentations([{"label": it["label"]} for it in train_items], ckpt_path, syn_dir,
                                                 copies=copies, seed=int(seeds[0]), bundle=bundle, **overrides)
        kwargs["settings"] = names
        if any(parse_setting(n)[1] == "gaussian" for n in names):  # the non-GAN baseline from the same label maps
            gdir = out / "gaussian"
            kwargs["gaussian"] = (load_datalist(gdir / "datalist.json") if (gdir / "datalist.json").is_file() else
                                  gaussian_label_pairs(train_items, [it["label"] for it in synthetic], gdir,
                                                       seed=int(seeds[0])))
        if FILTERED_SETTING in names:
            if not (syn_dir / "quality.csv").is_file():
                raise VolganConfigError(f"{syn_dir}: synthesised without quality scores; remove it to rerun")
            kwargs["filtered"] = filter_pairs(synthetic, syn_dir / "quality.csv")
        return compare_segmentation(train_items, test_items, synthetic, out / "comparison", seeds=seeds,
                                    device=device, title=f"{bundle}: real vs synthetic settings",
                                    **{**quick_kw, **kwargs})
    common = {**quick_kw, **dict(kwargs.pop("common", {}) or {}), "device": device}
    kwargs.pop("iterations", None)
    if entry.harness == "unpaired":
        dataset_b, test_b = kwargs.pop("dataset_b", None), kwargs.pop("test_b", None)
        if dataset_b is None:
            raise VolganConfigError(f"{bundle} needs --dataset-b: the second (unpaired) domain, e.g. MRI")
        items_b = resolve_dataset(dataset_b, out)
        if test_b is None:
            train_b, test_b_items = split_datalist(items_b, test_fraction, int(seeds[0]), group_key=None)
        else:
            train_b, test_b_items = items_b, resolve_dataset(test_b, out)
        return compare_cycleshape(train_items, train_b, test_items, test_b_items, out / "comparison",
                                  modes=names or list(entry.settings), seeds=seeds, common=common, **kwargs)
    if names is not None:
        kwargs["settings"] = {n: entry.settings[n] for n in names}
    return compare_bundle_settings(bundle, train_items, test_items, out / "comparison", seeds=seeds, common=common,
                                   **kwargs)
