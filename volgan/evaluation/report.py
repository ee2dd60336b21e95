"""The one report writer of every evaluation: per-case rows of each (setting, seed) run -> ``results.csv`` (every
row), ``results.md`` (a table: mean ± sd, saying what the ± is over), ``results.json`` and a bar chart.

A *run* is ``{"setting", "seed", "n_train", "n_test", "rows": [{"case": ..., <metric>: value, ...}]}``; *runs* maps
each setting to its runs (one per seed). With several seeds, the mean over cases is taken per seed and the ± is the
sd over seeds (the spread that matters for "does synthetic data help"); with one run it is the sd over cases.
NaN rows (a region absent in prediction and target) are skipped.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure  # no pyplot: the caller's backend (e.g. Jupyter's inline) stays as it is

from volgan.evaluation.statistics import MIN_SEEDS, NO_PAIRS, SCORE_RANGE, compare_to_reference
from volgan.io import atomic_write_json

__all__ = ["summarise", "aggregate", "format_table", "format_interval", "format_comparison", "write_report", "plot_bars",
           "plot_learning_curve", "single_run", "json_ready", "read_curve", "write_stopping_curves"]


def summarise(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of each metric over the rows (NaN rows skipped)."""
    out = {}
    for m in metrics:
        vals = np.array([row[m] for row in rows if m in row and not _nan(row[m])], dtype=float)
        out[m] = (float(vals.mean()), float(vals.std())) if len(vals) else (float("nan"), float("nan"))
    return out


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def single_run(setting: str, rows: Sequence[Mapping[str, Any]], n_train: Any = "", seed: Any = None) -> dict:
    """A run of one setting scored once (no seeds), e.g. an evaluation of one trained model."""
    return {"setting": setting, "seed": seed, "n_train": n_train, "n_test": len(rows), "rows": list(rows)}


def aggregate(runs: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str]) -> dict[str, dict]:
    """Per setting: ``summary`` (metric -> (mean, sd)), ``spread`` ("seeds" or "cases"), seeds, n, mean seconds."""
    out = {}
    for name, per_seed in runs.items():
        if len(per_seed) == 1:
            summary, spread = summarise(per_seed[0]["rows"], metrics), "cases"
        else:
            per = {m: [] for m in metrics}
            for r in per_seed:
                for m, (mean, _) in summarise(r["rows"], metrics).items():
                    if not math.isnan(mean):
                        per[m].append(mean)
            summary = {m: (float(np.mean(v)), float(np.std(v))) if v else (float("nan"), float("nan"))
                       for m, v in per.items()}
            spread = "seeds"
        out[name] = {
            "n_train": per_seed[0].get("n_train", ""), "n_test": per_seed[0].get("n_test", ""),
            "seeds": [r.get("seed") for r in per_seed], "spread": spread,
            "seconds": float(np.mean([r.get("seconds", float("nan")) for r in per_seed])),
            "summary": summary,
        }
    return out


def format_table(agg: Mapping[str, Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """Markdown table of ``aggregate``'s result: one row per setting, mean ± sd per metric."""
    head = "| setting | train | test | ± over | " + " | ".join(metrics) + " | time (s) |"
    lines = [head, "|---|---:|---:|---|" + "---:|" * (len(metrics) + 1)]
    for name, a in agg.items():
        cells = ["n/a" if math.isnan(a["summary"][m][0]) else f"{a['summary'][m][0]:.3f} ± {a['summary'][m][1]:.3f}"
                 for m in metrics]
        spread = f"{len(a['seeds'])} seeds" if a["spread"] == "seeds" else f"{a['n_test']} cases"
        secs = "" if math.isnan(a["seconds"]) else f"{a['seconds']:.0f}"
        lines.append(f"| {name} | {a['n_train']} | {a['n_test']} | {spread} | " + " | ".join(cells) + f" | {secs} |")
    return "\n".join(lines)


def format_interval(ci: Mapping[str, Any], signed: bool = False) -> str:
    """``mean [lo, hi]`` of a bootstrap result (``+`` signs for a difference), or ``n/a`` when it has no value
    (no pairs, NaN)."""
    vals = [ci.get(k, float("nan")) for k in ("mean", "lo", "hi")]
    if any(_nan(v) for v in vals):
        return NO_PAIRS
    f = "+.3f" if signed else ".3f"
    return f"{vals[0]:{f}} [{vals[1]:{f}}, {vals[2]:{f}}]"


def format_comparison(comparison: Mapping[str, Mapping[str, Mapping[str, Any]]], reference: str) -> str:
    """Markdown table of ``compare_to_reference``: per setting and metric the mean paired difference to
    ``reference``, its 95 % bootstrap interval and the verdict."""
    if not comparison:
        return ""
    metrics = list(next(iter(comparison.values())))
    lines = [f"Difference to **{reference}**, paired by test case and seed; [95 % paired bootstrap interval over "
             f"cases and seeds]; better / worse only when the interval excludes 0 (and from at least {MIN_SEEDS} "
             "seeds):", "",
             "| setting | pairs | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
             "|---|---:|" + "---:|" * len(metrics)]
    for name, per in comparison.items():
        cells = [NO_PAIRS if c["verdict"] == NO_PAIRS else f"{format_interval(c, signed=True)} {c['verdict']}"
                 for c in per.values()]
        n = next(iter(per.values()))
        lines.append(f"| {name} | {n['n_seeds']} seeds x {n['n_cases']} cases | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(output_dir: str | Path, title: str, runs: Mapping[str, Sequence[Mapping[str, Any]]],
                 metrics: Sequence[str], note: str = "", plot: bool = True, reference: str | None = None,
                 **extra: Any) -> dict[str, Any]:
    """Write ``results.csv``, ``results.md``, ``results.json`` (and ``dice.png``: the first metric per setting with
    error bars) into ``output_dir``; with ``reference`` (a setting, e.g. real only) also every other setting's
    paired difference to it with a bootstrap interval and a verdict (``volgan.evaluation.statistics``; Dice-like
    metrics, not HD). Returns ``{"title", "note", "metrics", "results", "runs", "table", "comparison", **extra}``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    agg = aggregate(runs, metrics)
    table = format_table(agg, metrics)
    comparison = {}
    if reference is not None and reference in runs:
        comparison = compare_to_reference(runs, reference, [m for m in metrics if not m.startswith("HD")],
                                          bounds=SCORE_RANGE)
        table = table + "\n\n" + format_comparison(comparison, reference)
    (out / "results.md").write_text(f"# {title}\n\n{note}\n\n{table}\n", encoding="utf-8")
    atomic_write_json(out / "results.json", json_ready(
        {"title": title, "note": note, "metrics": list(metrics), "results": agg, "runs": runs,
         "reference": reference, "comparison": comparison, **extra}))
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["setting", "seed", "case", *metrics])
        for name, per_seed in runs.items():
            for r in per_seed:
                for row in r["rows"]:
                    w.writerow([name, r.get("seed"), row.get("case"), *[row.get(m, "") for m in metrics]])
    if plot:
        plot_bars(out / "dice.png", agg, metrics[0], title)
    return {"title": title, "note": note, "metrics": list(metrics), "results": agg, "runs": runs, "table": table,
            "reference": reference, "comparison": comparison, **extra}


def json_ready(obj: Any) -> Any:
    """Plain JSON: NaN/Inf become ``null`` (strict JSON has no NaN), tuples lists, other objects strings."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, (int, np.integer, bool, str)) or obj is None:
        return obj.item() if isinstance(obj, np.generic) else obj
    return str(obj)


def plot_bars(path: Path, agg: Mapping[str, Mapping[str, Any]], metric: str, title: str) -> None:
    """Bar chart of one metric per setting with its sd as error bars."""
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


def plot_learning_curve(path: Path, points: Sequence[Mapping[str, Any]], unit: str = "cases") -> None:
    """Learning curve with intervals: left, each setting's mean metric vs real training cases with its 95 %
    bootstrap interval (over cases and seeds); right, each setting's paired difference to the reference with its
    interval and the zero line (a point whose bar crosses 0 is no detectable difference)."""
    fig = Figure(figsize=(9.0, 3.4))
    ax, bx = fig.subplots(1, 2)
    x = [p["n_real"] for p in points]
    names = list(dict.fromkeys(n for p in points for n in p["settings"]))
    for i, name in enumerate(names):
        shift = (i - (len(names) - 1) / 2) * 0.04  # small log-x offsets: overlapping bars stay readable
        xs = [xv * (1 + shift) for xv, p in zip(x, points) if name in p["settings"]]
        v = [p["settings"][name] for p in points if name in p["settings"]]
        ax.errorbar(xs, [a["mean"] for a in v], yerr=[[a["mean"] - a["lo"] for a in v], [a["hi"] - a["mean"] for a in v]],
                    marker="o", capsize=3, label=name)
        d = [(xv, a["difference"]) for xv, a in zip(xs, v) if a.get("difference")]
        if d:
            bx.errorbar([t[0] for t in d], [t[1]["mean"] for t in d],
                        yerr=[[t[1]["mean"] - t[1]["lo"] for t in d], [t[1]["hi"] - t[1]["mean"] for t in d]],
                        marker="o", capsize=3, label=name, color=f"C{i}")
    metric = points[0]["metric"] if points else "Dice"
    for a in (ax, bx):
        a.set_xscale("log", base=2)
        a.set_xticks(x, [str(v) for v in x])
        a.set_xlabel(f"real training {unit}")
    bx.axhline(0.0, color="k", lw=0.8)
    ax.set_ylabel(f"{metric} (mean, 95 % CI)")
    bx.set_ylabel(f"Δ {metric} vs {points[0]['reference'] if points else 'reference'}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def read_curve(path: str | Path) -> dict[str, Any]:
    """A stopping criterion's curve (``val_curve.csv`` / ``gan_val_curve.csv``: ``epoch, iteration, <metric>`` per
    validation) -> ``{"metric", "epoch", "iteration", "value"}`` (lists in validation order)."""
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no validation recorded")
    metric = [k for k in rows[0] if k not in ("epoch", "iteration")][0]
    return {"metric": metric, "epoch": [int(r["epoch"]) for r in rows],
            "iteration": [int(r["iteration"]) for r in rows], "value": [float(r[metric]) for r in rows]}


def write_stopping_curves(output_dir: str | Path, curves: Mapping[str, str | Path], mode: str, patience: int,
                          unit: str = "iteration", name: str = "gan_curves") -> str:
    """The record of GANs trained to a stopping criterion (#20 item 4): for each labelled curve file, where its best
    validation was (``unit``: ``iteration`` or ``epoch``), where its validations ended and whether the rule stopped
    it (``patience`` validations without a new best) or its cap did; ``mode`` ``"min"`` (MMD) or ``"max"`` (SSIM).
    Writes ``<name>.md`` (the table) and ``<name>.png`` (every curve, its best marked) in ``output_dir``; returns
    the table."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    read = {label: read_curve(p) for label, p in curves.items()}
    metric = next(iter(read.values()))["metric"] if read else "score"
    lines = [f"| GAN | validations | best {metric} | at {unit} | last validation | stopped by the rule |",
             "|---|---:|---:|---:|---:|---|"]
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    for i, (label, c) in enumerate(read.items()):
        k = int(np.argmin(c["value"]) if mode == "min" else np.argmax(c["value"]))
        x = c[unit]
        stopped = "yes" if len(x) - 1 - k >= patience > 0 else "no: trained to its cap"
        lines.append(f"| {label} | {len(x)} | {c['value'][k]:.4f} | {x[k]} | {x[-1]} | {stopped} |")
        ax.plot(x, c["value"], color=f"C{i}", marker="o", ms=2.5, lw=1, label=label)
        ax.plot([x[k]], [c["value"][k]], color=f"C{i}", marker="*", ms=10)
    ax.set_xlabel(unit)
    ax.set_ylabel(f"held-out {metric} ({'lower' if mode == 'min' else 'higher'} is better; * best)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=100)
    table = "\n".join(lines)
    (out / f"{name}.md").write_text(table + "\n", encoding="utf-8")
    return table
