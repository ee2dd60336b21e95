"""One harness for what synthetic data buys: the same segmentor, budget and seeds under the settings the papers
compare; the demo, ``volgan evaluate`` and the experiments all run it.

- ``compare_segmentation``: 3D (image, label) pairs and a synthesiser's output as a datalist. Settings: real only,
  synthetic only, real + 100/300/500 % synthetic (MM-GAN Sec. V-D, Table IV), synthetic pre-training then
  fine-tuning on a fraction of the real cases (MM-GAN: 10 %).
- ``compare_bundle_settings``: methods whose comparison lives inside a bundle (P3's modes, P5's ratios, P4 with
  or without the augmenter): each setting is a set of bundle overrides; train.yaml, then evaluate.yaml merged
  onto it with the same overrides.
- ``compare_cycleshape``: P2's modes on two unpaired domains, the cyclegan run's segmentors as the S-score reference.
- ``learning_curve`` (3D, with one GAN per size and seed through ``train_synthesis_pools``), ``bundle_learning_curve``
  (P3/P4/P5) and ``learning_curve_over`` (any point function): Dice vs number of real training cases per setting,
  each point with its bootstrap interval and its paired difference to real only (issue #20).
- ``evaluate_bundle``: ``volgan evaluate``, dispatching on ``volgan.evaluation.registry.METHODS``.

Every (setting, seed) result is written to ``output_dir/runs/<setting>_seed<k>.json`` as soon as it exists and is
not recomputed (resumable); the report is ``volgan.evaluation.report.write_report``'s.
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from tqdm.auto import tqdm

from monai.bundle import ConfigParser

from volgan.bundle import config_files, run_bundle
from volgan.config import as_bool
from volgan.data.dataset import resolve_dataset, split_datalist
from volgan.data.datalist import load_datalist
from volgan.data.mixing import mix_datalists
from volgan.errors import VolganConfigError
from volgan.evaluation.metrics import BRATS_REGIONS
from volgan.evaluation.quality import filter_pairs
from volgan.synthesis.label_to_image import gaussian_label_pairs
from volgan.evaluation.registry import CYCLESHAPE_MODES, FILTERED_SETTING, SEGMENTATION_SETTINGS, method
from volgan.evaluation.report import format_interval, json_ready, plot_learning_curve, write_report
from volgan.evaluation.scores import CYCLESHAPE_METRICS, HELD_OUT
from volgan.evaluation.segmentor import evaluate_segmentor, train_segmentor
from volgan.evaluation.statistics import MIN_SEEDS, SCORE_RANGE, mean_interval
from volgan.io import atomic_write_json, save_weights
from volgan.synthesis import synthesize_augmentations

__all__ = ["compare_segmentation", "compare_bundle_settings", "compare_cycleshape", "learning_curve",
           "bundle_learning_curve", "learning_curve_over", "write_learning_curve", "train_synthesis_pools",
           "trained_gan_curves", "share_trained_gan", "budget_overrides", "evaluate_bundle", "run_cached",
           "segmentor_weights"]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "setting"


def run_cached(path: Path, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Resumability: the stored result of a (setting, seed), or compute and store it atomically (a file at
    ``path`` that is not a run result, without ``rows``, is recomputed over)."""
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(stored, dict) and "rows" in stored:
            return stored
    t0 = time.time()
    res = compute()
    res["seconds"] = time.time() - t0
    atomic_write_json(path, res)
    return res


def segmentor_weights(output_dir: str | Path, setting: str, seed: int) -> Path:
    """Where ``compare_segmentation`` keeps the segmentor it trained for (``setting``, ``seed``): beside the run's
    result ``runs/<setting>_seed<k>.json`` but under another stem, since ``save_weights`` writes its
    ``<stem>.json`` sidecar next to the weights (a run killed between the two must not leave a sidecar where its
    result is looked for)."""
    return Path(output_dir) / "runs" / f"{_slug(setting)}_seed{seed}_segmentor.pt"


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


#: synthetic pairs shared by every seed, or per seed (``{seed: pairs}``: one GAN trained per seed, so the seeds
#: resample the GAN as well as the segmentor)
Pool = Union[Sequence[Mapping[str, Any]], Mapping[int, Sequence[Mapping[str, Any]]]]


def _for_seed(pool: Pool | None, seed: int) -> Sequence[Mapping[str, Any]]:
    """The pairs of ``pool`` that seed ``seed`` uses (a per-seed pool must have that seed)."""
    if isinstance(pool, Mapping):
        if seed not in pool:
            raise VolganConfigError(f"no synthetic pairs for seed {seed}: the pools were made for seeds {sorted(pool)}")
        return pool[seed]
    return pool or []


def compare_segmentation(
    real_train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    synthetic: Pool,
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
    filtered: Pool | None = None,
    gaussian: Pool | None = None,
) -> dict[str, Any]:
    """Train the same 3D segmentor (``volgan.evaluation.segmentor.train_segmentor``; ``segmentor``: its
    ``channels``, ``patch_size``, ``batch_size``, ``lr``, ``betas``) for ``iterations`` under each setting and seed,
    and evaluate Dice and HD95 per region on ``test``. A setting ``real+P%`` adds P % synthetic pairs;
    ``pretrain+finetune`` trains on the synthetic pairs, then fine-tunes on ``finetune_fraction`` of the real cases
    (at least one) for ``finetune_iterations`` (default ``iterations // 2``). ``names``: how settings are shown
    in the report (default their own names). ``real+100% filtered`` adds as many pairs as ``real+100%``, drawn from
    ``filtered`` (the synthetic pairs the quality scores rank best, ``filter_pairs``); ``real+P% gaussian`` from
    ``gaussian`` (the per-label Gaussian baseline, ``volgan.synthesis.gaussian_label_pairs``); ``real+aug`` and
    ``real+aug+P%`` train with the standard augmentation baseline. Every pool (``synthetic``, ``filtered``,
    ``gaussian``) may be given per seed (``{seed: pairs}``, e.g. one GAN trained per seed). Each trained segmentor is kept as
    ``runs/<setting>_seed<k>_segmentor.pt`` (``segmentor_weights``). Returns the report (also written to ``output_dir``)."""
    regions = dict(regions or BRATS_REGIONS)
    parsed = {s: parse_setting(s) for s in settings}
    if not real_train or not test:
        raise VolganConfigError("compare_segmentation needs real training cases and test cases")
    pools = {"gan": synthetic, "filtered": filtered, "gaussian": gaussian}
    for name, (_, pool, _) in parsed.items():
        if pool is not None and not all(_for_seed(pools[pool], s) for s in seeds):
            what = {"gan": "synthetic pairs", "filtered": "quality-filtered synthetic pairs",
                    "gaussian": "per-label Gaussian baseline pairs"}[pool]
            raise VolganConfigError(f"setting {name!r} needs {what} for every seed {list(seeds)}; none given")
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
                gan_pairs = _for_seed(synthetic, seed)
                if name == "synthetic":
                    items, net = gan_pairs, train(gan_pairs)
                elif name != "pretrain+finetune":  # real [+aug] [+P % of a pool]
                    items = (real_train if pool is None else
                             mix_datalists(real_train, _for_seed(pools[pool], seed), percent, seed=seed))
                    net = train(items, augment=augment)
                else:  # pretrain+finetune
                    k = max(1, int(math.ceil(len(real_train) * finetune_fraction)))
                    idx = sorted(np.random.RandomState(seed).permutation(len(real_train))[:k])
                    items = [real_train[i] for i in idx]
                    net = train(items, network=train(gan_pairs),
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


#: what a 2D bundle's GAN stage leaves in its run folder: the stage's checkpoints and, when trained to the
#: stopping criterion (``--gan_val_interval``), the best generator the later stages load back (with its sidecar)
#: and its curve
GAN_STAGE_FILES = ("gan", "model_g_best.pt", "model_g_best.json", "gan_val_curve.csv")


def share_trained_gan(src: Path, run: Path) -> None:
    """Give ``run`` the finished GAN stage of ``src`` (``GAN_STAGE_FILES`` that exist, none overwritten): the
    bundle then resumes the stage as finished and, with the stopping criterion on, restores the same best
    generator ``src`` used (the checkpoint alone holds the last one)."""
    run.mkdir(parents=True, exist_ok=True)
    for name in GAN_STAGE_FILES:
        s, d = src / name, run / name
        if d.exists() or not s.exists():
            continue
        if s.is_dir():
            shutil.copytree(s, d)
        else:
            shutil.copy2(s, d)


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
                    share_trained_gan(out / f"seed{seed}" / _slug(share_gan[0]), run)
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


def trained_gan_curves(bundle: str, output_dir: str | Path, settings: Sequence[str],
                       seeds: Sequence[int]) -> dict[str, Path]:
    """The stopping-criterion curves (``gan_val_curve.csv``) of the GANs a ``compare_bundle_settings`` run in
    ``output_dir`` trained: one per (setting that trains its own GAN, seed), labelled ``"<setting>, seed <k>"``;
    settings that reuse another's GAN (the registry's ``share_gan``) and runs without a curve are left out."""
    shared = set(method(bundle).share_gan[1]) if method(bundle).share_gan else set()
    found = {f"{name}, seed {seed}": Path(output_dir) / f"seed{seed}" / _slug(name) / "gan_val_curve.csv"
             for name in settings if name not in shared for seed in seeds}
    return {label: path for label, path in found.items() if path.is_file()}


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
    Every other mode gets its paired difference to the reference mode (by seed) with a bootstrap interval and a
    verdict. Finished (mode, seed) runs are not redone."""
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
                        f"{common}", reference=entry.reference)


def learning_curve(
    real_train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    synthetic: Pool | None,
    output_dir: str | Path,
    sizes: Sequence[int] | None = None,
    percent: float = 100.0,
    metric: str | None = None,
    settings: Sequence[str] | None = None,
    pools: Callable[[Sequence[Mapping[str, Any]], int, Path], Mapping[str, Sequence[Mapping[str, Any]]]] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The low-data regime (issue #20): ``compare_segmentation`` on the first k real training cases for each k in
    ``sizes`` (default 1, 2, 4, ... up to all), under ``settings`` (default real only vs real + ``percent`` %
    synthetic; any ``compare_segmentation`` setting, e.g. the baselines ``real+aug``, ``real+100% gaussian``).

    Synthetic data never comes from cases a point does not have: with ``pools`` (``(chosen cases, seed, folder)
    -> {"gan": pairs, "gaussian": pairs}``, e.g. a GAN trained on exactly those cases with that seed:
    ``train_synthesis_pools``) each point and seed gets its own; otherwise ``synthetic`` pairs carrying a
    ``source`` (volgan's synthesis datalists do) are restricted to those made from the chosen label maps.
    Writes ``learning_curve.{md,csv,json,png}`` (``write_learning_curve``); ``kwargs`` go to
    ``compare_segmentation`` (seeds, iterations, segmentor, ...)."""
    n = len(real_train)
    settings = list(settings or ("real", f"real+{percent:g}%"))
    out = Path(output_dir)
    seeds = list(kwargs.pop("seeds", (0,)))

    def point(k: int, folder: Path) -> dict[str, Any]:
        chosen = list(real_train[:k])
        if pools is not None:
            made = {seed: pools(chosen, seed, folder / f"pools_seed{seed}") for seed in seeds}
            per_pool = {key: {seed: m.get(key, []) for seed, m in made.items()} for key in ("gan", "gaussian")}
            return compare_segmentation(chosen, test, per_pool["gan"], folder, settings=settings, seeds=seeds,
                                        gaussian=per_pool["gaussian"], **kwargs)
        labels = {os.path.abspath(str(it["label"])) for it in chosen}

        def mine(pool: Pool | None) -> Pool:
            keep = lambda items: [s for s in items or [] if "source" not in s  # noqa: E731
                                  or os.path.abspath(str(s["source"])) in labels]
            return {sd: keep(v) for sd, v in pool.items()} if isinstance(pool, Mapping) else keep(pool)

        extra = {key: mine(kwargs[key]) for key in ("gaussian", "filtered") if kwargs.get(key) is not None}
        return compare_segmentation(chosen, test, mine(synthetic), folder, settings=settings, seeds=seeds,
                                    **{**kwargs, **extra})

    return learning_curve_over(_sizes(sizes, n), point, out, metric, "real")


def bundle_learning_curve(bundle: str, train: Sequence[Mapping[str, Any]], test: Any, output_dir: str | Path,
                          sizes: Sequence[int] | None = None, settings: Mapping[str, Mapping[str, Any]] | None = None,
                          metric: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """``learning_curve`` for methods compared inside their bundle (P3, P4, P5): ``compare_bundle_settings`` on
    the first k cases of ``train`` for each k in ``sizes`` (each bundle trains its GAN on exactly those cases and
    seed). Bundles that stop early on held-out cases (P4, P5) should get a fixed ``val_dataset_dir`` in
    ``common`` (``evaluate_bundle`` sets aside cases for it), so every point validates on the same cases."""
    entry = method(bundle)
    out = Path(output_dir)

    def point(k: int, folder: Path) -> dict[str, Any]:
        return compare_bundle_settings(bundle, list(train[:k]), test, folder, settings=settings, **kwargs)

    return learning_curve_over(_sizes(sizes, len(train)), point, out, metric, entry.reference)


def _sizes(sizes: Sequence[int] | None, n: int) -> list[int]:
    default = [2**k for k in range(int(math.log2(max(n, 1))) + 1)] + [n]
    chosen = sorted({int(s) for s in (sizes or default)})
    too_many = [s for s in chosen if s > n]
    if too_many or not chosen or chosen[0] < 1:
        raise VolganConfigError(f"learning-curve sizes {chosen}: each must be 1..{n} (the real training cases there "
                                "are); pass smaller --sizes or more cases")
    return chosen


def learning_curve_over(sizes: Sequence[int], point: Callable[[int, Path], dict[str, Any]], output_dir: str | Path,
                        metric: str | None = None, reference: str | None = None, unit: str = "cases") -> dict[str, Any]:
    """Any learning curve: ``point(k, folder)`` (a harness report, e.g. ``compare_bundle_settings`` on k training
    slices) for every size k; per setting the mean ``metric`` (default WT, else Dice, else the first) with its
    bootstrap interval over cases and seeds, and its paired difference to the report's reference (or
    ``reference``) with interval and verdict. Writes ``write_learning_curve``'s files into ``output_dir``; ``unit``:
    what k counts (``"slices"`` for the 2D methods' curves)."""
    out = Path(output_dir)
    points = []
    for k in sizes:
        res = point(k, out / f"n{k}")
        first = next(iter(res["results"].values()))["summary"]
        col = metric or ("WT" if "WT" in first else "Dice" if "Dice" in first else next(iter(first)))
        ref = res.get("reference") if res.get("reference") in res["runs"] else reference
        row = {"n_real": k, "metric": col, "reference": ref, "settings": {}}
        for name, runs in res["runs"].items():
            ci = mean_interval(runs, col, bounds=None if col.startswith("HD") else SCORE_RANGE)
            diff = res.get("comparison", {}).get(name, {}).get(col)
            row["settings"][name] = {"mean": ci["mean"], "lo": ci["lo"], "hi": ci["hi"], "n_seeds": ci["n_seeds"],
                                     "n_cases": ci["n_cases"], "difference": diff}
        points.append(row)
    return write_learning_curve(out, points, unit)


def write_learning_curve(out: Path, points: Sequence[Mapping[str, Any]], unit: str = "cases") -> dict[str, Any]:
    """``learning_curve.md`` (per size and setting: mean [95 % interval], difference to the reference [interval]
    and verdict, n), ``.csv``, ``.json`` and ``.png`` (``plot_learning_curve``)."""
    out.mkdir(parents=True, exist_ok=True)
    ref = points[0]["reference"] if points else None
    lines = [f"{points[0]['metric'] if points else 'Dice'} per number of real training {unit}: mean [95 % bootstrap "
             f"interval over test cases and seeds]; Δ: paired difference to {ref} [95 % interval], a verdict "
             f"only when the interval excludes 0 (and from at least {MIN_SEEDS} seeds).", "",
             f"| real {unit} | setting | mean [95 % CI] | Δ vs reference [95 % CI] | verdict | seeds x cases |",
             "|---:|---|---:|---:|---|---:|"]
    rows = []
    for p in points:
        for name, v in p["settings"].items():
            d = v["difference"]
            delta = "reference" if name == p["reference"] else format_interval(d, signed=True) if d else ""
            lines.append(f"| {p['n_real']} | {name} | {format_interval(v)} | {delta} | "
                         f"{d['verdict'] if d else ''} | {v['n_seeds']} x {v['n_cases']} |")
            rows.append([p["n_real"], name, p["metric"], v["mean"], v["lo"], v["hi"], *(
                (d["mean"], d["lo"], d["hi"], d["verdict"]) if d else ("", "", "", ""))])
    table = "\n".join(lines)
    (out / "learning_curve.md").write_text(table + "\n", encoding="utf-8")
    with open(out / "learning_curve.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["n_real", "setting", "metric", "mean", "lo", "hi", "diff", "diff_lo", "diff_hi", "verdict"])
        w.writerows(rows)
    atomic_write_json(out / "learning_curve.json", {"points": json_ready(list(points))})
    plot_learning_curve(out / "learning_curve.png", points, unit)
    return {"points": list(points), "table": table}


def train_synthesis_pools(bundle: str, train_overrides: Mapping[str, Any] | None = None, copies: int = 5,
                          device: Any = "cpu", gaussian: bool = True, gan_iterations: int | None = None,
                          validation: Sequence[Mapping[str, Any]] | None = None,
                          **synthesis: Any) -> Callable[[Sequence[Mapping[str, Any]], int, Path], dict[str, list]]:
    """``learning_curve``'s ``pools`` for label-map-to-image methods (MM-GAN): for (cases, seed, folder) train
    ``bundle``'s generator on exactly those cases with that seed (train.yaml with ``train_overrides``; with
    ``gan_iterations`` ``max_epochs`` = that many iterations over the cases, one per case and epoch as MM-GAN's
    batch of one patch, so every point's GAN gets the same number of steps), synthesise ``copies`` perturbed pairs
    per label map (``synthesize_augmentations``) and, with ``gaussian``, the per-label Gaussian baseline from the
    same perturbed label maps. Each part is kept in ``folder`` and not redone.

    ``validation`` (#20 item 4: the GAN trained to a criterion): cases among the chosen ones that the generator
    does not train on but is validated on (train.yaml's ``val_dataset_dir``; with ``val_patience`` in
    ``train_overrides`` it stops when their SSIM stops improving); synthesis then uses its best generator
    (``model_best.pt``) and still starts from every chosen case's label map (labels are known for all of them)."""
    train_overrides = dict(train_overrides or {})
    held = {_case_key(it) for it in validation or ()}

    def pools(chosen: Sequence[Mapping[str, Any]], seed: int, folder: Path) -> dict[str, list]:
        gan, syn_dir, g_dir = folder / "gan", folder / "synthetic", folder / "gaussian"
        fit = [dict(it) for it in chosen if _case_key(it) not in held]
        val = [dict(it) for it in chosen if _case_key(it) in held]
        if held and (not fit or not val):
            raise VolganConfigError(f"the GAN's validation cases must be some, not all, of the {len(chosen)} "
                                    f"training cases ({len(val)} of them are)")
        if not (gan / "finished").is_file():  # training resumes from its newest checkpoint
            epochs = {} if gan_iterations is None else {"max_epochs": max(1, -(-int(gan_iterations) // len(fit)))}
            run_bundle(bundle, "train", dataset_dir=fit, output_dir=str(gan), seed=seed,
                       **{"device": device, **train_overrides, **epochs, **({"val_dataset_dir": val} if val else {})})
            (gan / "finished").write_text("", encoding="utf-8")
        ckpt = gan / "model_best.pt" if val and (gan / "model_best.pt").is_file() else gan / "model.pt"
        return synthetic_pools(chosen, ckpt, syn_dir, g_dir if gaussian else None, seed, copies, bundle,
                               device=device, **synthesis)

    return pools


def _case_key(item: Mapping[str, Any]) -> str:
    return os.path.abspath(str(item["label"]))


def synthetic_pools(cases: Sequence[Mapping[str, Any]], ckpt_path: str | os.PathLike, syn_dir: Path,
                    gaussian_dir: Path | None, seed: int, copies: int, bundle: str, **synthesis: Any) -> dict[str, list]:
    """One generator's pools: ``{"gan": copies perturbed pairs per label map of cases}`` (``synthesize_augmentations``)
    and, with ``gaussian_dir``, ``"gaussian"``: the per-label Gaussian baseline of the same perturbed label maps.
    Each is read back from its folder's ``datalist.json`` when it exists, not redone; the datalist is written last,
    so a folder without one is a synthesis cut short (killed, out of disk) and is redone in place."""
    def cached(folder: Path, make: Callable[[], list]) -> list:
        return load_datalist(folder / "datalist.json") if (folder / "datalist.json").is_file() else make()

    made = {"gan": cached(syn_dir, lambda: synthesize_augmentations(
        [{"label": it["label"]} for it in cases], ckpt_path, syn_dir, copies=copies, seed=seed, bundle=bundle,
        **{**synthesis, "overwrite": True}))}
    if gaussian_dir is not None:
        made["gaussian"] = cached(gaussian_dir, lambda: gaussian_label_pairs(
            cases, [it["label"] for it in made["gan"]], gaussian_dir, seed=seed, overwrite=True))
    return made


def budget_overrides(bundle: str, fraction: float) -> dict[str, int]:
    """``--budget F``: the method's budget options (``MethodEntry.budget``: their train.yaml defaults, or the
    harness segmentor's ``iterations``) times ``F`` (at least 1): between ``--quick`` and the paper's budget."""
    if not fraction > 0:
        raise VolganConfigError(f"--budget must be a fraction > 0 of the paper's budget (e.g. 0.1), got {fraction}")
    parser = ConfigParser()
    parser.read_config(config_files(bundle, "train"))
    defaults = {"iterations": inspect.signature(compare_segmentation).parameters["iterations"].default}
    out = {}
    for key in method(bundle).budget:
        value = defaults.get(key, parser.get(key))
        if not isinstance(value, int) or isinstance(value, bool):
            raise VolganConfigError(f"{bundle}: budget option {key!r} has no plain integer default ({value!r})")
        out[key] = max(1, int(round(value * float(fraction))))
    return out


#: ``evaluate_bundle``'s seeds when none are given: (not quick, quick); a verdict needs at least ``MIN_SEEDS``
DEFAULT_SEEDS = {False: (0, 1, 2), True: (0,)}


def evaluate_bundle(bundle: str, dataset: Any, output_dir: str | Path, ckpt_path: str | Sequence[str] | None = None,
                    test: Any = None, test_fraction: float = 0.25, seeds: Sequence[int] | None = None, copies: int = 5,
                    device: Any = "cpu", quick: bool = False, sizes: Sequence[int] | None = None,
                    budget: float | None = None, overrides: Mapping[str, Any] | None = None,
                    **kwargs: Any) -> dict[str, Any]:
    """``volgan evaluate --bundle NAME``: split ``dataset`` by case (or use ``test``), then, by the method's
    registry entry (``volgan.evaluation.registry.METHODS``):

    - ``synthesis`` (MM-GAN): synthesise ``copies`` perturbed pairs per training label map with the generator
      ``ckpt_path`` (one per seed: the seeds resample the GAN too) and run ``compare_segmentation`` (real, the
      baselines, real + 100/300/500 %, pre-train + fine-tune ...);
    - ``unpaired`` (P2): ``dataset`` is domain A, ``dataset_b`` (or ``test_b``) domain B, each split by case;
      ``compare_cycleshape`` over the modes cyclegan / ada / ours (S-score and segmentation Dice);
    - ``settings`` (the 2D bundles): ``compare_bundle_settings`` with the bundle's own settings.

    ``sizes``: the learning curve instead (``learning_curve`` / ``bundle_learning_curve``: the first k training
    cases for each k; MM-GAN then trains one generator per size and seed, ``ckpt_path`` unused). ``quick`` shrinks
    every budget (a smoke run), ``budget`` scales the paper's (``budget_overrides``); ``overrides``: bundle ids for
    every training run (``volgan evaluate --set ID=VALUE``, e.g. P2's ``label_map_a``; MM-GAN: its GAN trainings);
    ``kwargs`` go to the comparison function (explicit options win over all of these). ``seeds``: default 0 1 2
    (``quick``: 0), as ``volgan evaluate``."""
    entry = method(bundle)
    out = Path(output_dir)
    seeds = [int(s) for s in (seeds if seeds is not None else DEFAULT_SEEDS[bool(quick)])]
    items = resolve_dataset(dataset, out)
    if test is None:
        train_items, test_items = split_datalist(items, test_fraction, seeds[0], group_key=None, source=dataset,
                                                 remedy="pass --test with held-out cases, or add cases")
    else:
        train_items, test_items = items, resolve_dataset(test, out)
    names = kwargs.pop("settings", None)
    if names is not None:
        bad = [n for n in names if n not in entry.settings]
        if bad:
            raise VolganConfigError(f"unknown setting(s) {bad} of {bundle}; choose from {list(entry.settings)}")
    scaled = budget_overrides(bundle, budget) if budget is not None else {}
    quick_kw = {**scaled, **(dict(entry.quick) if quick else {})}
    if entry.harness == "synthesis":
        names = list(names) if names is not None else list(entry.settings)
        kwargs["settings"] = names
        kwargs = {**{k: v for k, v in quick_kw.items() if k != "max_epochs"}, **kwargs}
        synth_kw = {"device": device, **({"gen_channels": kwargs.pop("gen_channels")} if "gen_channels" in kwargs else {})}
        if sizes is not None:
            train_kw = {**({"max_epochs": scaled["max_epochs"]} if "max_epochs" in scaled else {}),
                        **(dict(entry.train_quick) if quick else {}), **dict(overrides or {}),
                        **dict(kwargs.pop("train_overrides", {}) or {})}
            pools = train_synthesis_pools(bundle, train_kw, copies=copies, device=device,
                                          gaussian=any(parse_setting(n)[1] == "gaussian" for n in names),
                                          **{k: v for k, v in synth_kw.items() if k != "device"})
            return learning_curve(train_items, test_items, None, out / "learning_curve", sizes=sizes, pools=pools,
                                  seeds=seeds, device=device, **kwargs)
        ckpts = [ckpt_path] if isinstance(ckpt_path, (str, os.PathLike)) else list(ckpt_path or [])
        if not ckpts:
            raise VolganConfigError(f"{bundle} needs --ckpt-path: a trained generator (model.pt), one per seed to "
                                    "resample the GAN too, or --sizes to train one per learning-curve point")
        if len(ckpts) not in (1, len(seeds)):
            raise VolganConfigError(f"--ckpt-path: {len(ckpts)} generators for seeds {seeds}: give one, or one per seed")
        if FILTERED_SETTING in names:  # score every pair against the real training pairs
            synth_kw.update(quality_reference=[dict(image=it["image"], label=it["label"]) for it in train_items],
                            reject_copies=False)
        per_seed = {}
        for i, seed in enumerate(seeds if len(ckpts) > 1 else seeds[:1]):
            tag = "" if len(ckpts) == 1 else f"_seed{seed}"
            syn_dir = out / f"synthetic{tag}"
            wants_gaussian = any(parse_setting(n)[1] == "gaussian" for n in names)  # the non-GAN baseline
            pools = synthetic_pools(train_items, ckpts[i], syn_dir, out / f"gaussian{tag}" if wants_gaussian else None,
                                    seed, copies, bundle, **synth_kw)
            if FILTERED_SETTING in names:
                if not (syn_dir / "quality.csv").is_file():
                    raise VolganConfigError(f"{syn_dir}: synthesised without quality scores; remove it to rerun")
                pools["filtered"] = filter_pairs(pools["gan"], syn_dir / "quality.csv")
            per_seed[seed] = pools
        one = len(ckpts) == 1
        pool = {key: (per_seed[seeds[0]][key] if one else {s: p[key] for s, p in per_seed.items()})
                for key in per_seed[seeds[0]]}
        return compare_segmentation(train_items, test_items, pool.pop("gan"), out / "comparison", seeds=seeds,
                                    device=device, title=f"{bundle}: real vs synthetic settings", **pool, **kwargs)
    common = {**quick_kw, **dict(overrides or {}), **dict(kwargs.pop("common", {}) or {}), "device": device}
    kwargs.pop("iterations", None)
    if entry.harness == "unpaired":
        dataset_b, test_b = kwargs.pop("dataset_b", None), kwargs.pop("test_b", None)
        if dataset_b is None:
            raise VolganConfigError(f"{bundle} needs --dataset-b: the second (unpaired) domain, e.g. MRI")
        if sizes is not None:
            raise VolganConfigError(f"{bundle}: --sizes (learning curves) is for methods trained on labelled cases; "
                                    "P2 trains on two unpaired domains")
        items_b = resolve_dataset(dataset_b, out)
        if test_b is None:
            train_b, test_b_items = split_datalist(items_b, test_fraction, seeds[0], group_key=None, source=dataset_b,
                                                   remedy="pass --test-b with held-out domain-B cases, or add cases")
        else:
            train_b, test_b_items = items_b, resolve_dataset(test_b, out)
        return compare_cycleshape(train_items, train_b, test_items, test_b_items, out / "comparison",
                                  modes=names or list(entry.settings), seeds=seeds, common=common, **kwargs)
    if names is not None:
        kwargs["settings"] = {n: entry.settings[n] for n in names}
    if sizes is not None:
        if entry.val_key and not common.get(entry.val_key):  # the same held-out validation cases for every point
            n_val = max(1, int(round(0.2 * len(train_items))))
            if len(train_items) - n_val < max(sizes):
                raise VolganConfigError(f"{bundle}: --sizes up to {max(sizes)} needs {max(sizes) + n_val} training "
                                        f"cases ({n_val} set aside for validation); there are {len(train_items)}")
            train_items, common[entry.val_key] = train_items[:-n_val], train_items[-n_val:]
        return bundle_learning_curve(bundle, train_items, test_items, out / "learning_curve", sizes=sizes,
                                     seeds=seeds, common=common, **kwargs)
    return compare_bundle_settings(bundle, train_items, test_items, out / "comparison", seeds=seeds, common=common,
                                   **kwargs)
