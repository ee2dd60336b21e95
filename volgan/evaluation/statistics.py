"""Telling a gain from noise (issue #20): the paired bootstrap confidence interval of a setting's Dice difference to
a reference setting (real only), resampling the test cases and the seeds, and the verdict rule that reads it.

The pairing: the same test case scored by both settings' segmentors of the same seed. A bootstrap replicate draws
seeds with replacement and test cases with replacement (the same draw for both settings) and takes the mean of the
paired differences; the interval is the percentile interval of the replicates, widened about the mean for small
samples (``small_sample_expansion``: few seeds make a plain percentile interval too narrow). A setting is called
better (worse) only when the whole interval lies above (below) zero, and only from at least ``MIN_PAIRS`` pairs of at least
``MIN_SEEDS`` seeds: the bootstrap of a single pair is that pair's value, an interval of width 0 that says nothing
about noise, and the interval of one seed resamples the test cases only, not the training (GAN and segmentor) that
a rerun with another seed would change. A difference with no pair at all (a metric one of the settings does not
have) has no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["paired_differences", "paired_bootstrap", "metric_matrix", "mean_interval", "verdict",
           "compare_to_reference", "small_sample_expansion", "SCORE_RANGE", "BETTER", "WORSE", "NO_DIFF", "TOO_FEW",
           "NO_PAIRS", "MIN_PAIRS", "MIN_SEEDS"]

BETTER, WORSE, NO_DIFF = "better", "worse", "no detectable difference"
TOO_FEW, NO_PAIRS = "too few seeds or pairs to tell", "n/a"
#: the fewest (seed, case) pairs, and the fewest seeds among them, a verdict is read from
MIN_PAIRS, MIN_SEEDS = 2, 2
#: the range of the scores the harness compares (Dice per region, S-score; HD95 is reported, not compared)
SCORE_RANGE = (0.0, 1.0)


def paired_differences(runs: Sequence[Mapping[str, Any]], reference: Sequence[Mapping[str, Any]], metric: str
                       ) -> np.ndarray:
    """(seeds, cases) differences ``setting - reference`` of ``metric``, pairing runs by seed (in order when the
    seeds do not match) and rows by ``case``; NaN where either is missing or NaN."""
    by_seed = {r.get("seed"): r for r in reference}
    pairs = [(r, by_seed.get(r.get("seed"))) for r in runs]
    if any(ref is None for _, ref in pairs):
        pairs = list(zip(runs, reference))
    cases = sorted({str(row.get("case")) for r, _ in pairs for row in r["rows"]})
    out = np.full((len(pairs), len(cases)), np.nan)
    for i, (run, ref) in enumerate(pairs):
        a = {str(row.get("case")): row.get(metric) for row in run["rows"]}
        b = {str(row.get("case")): row.get(metric) for row in ref["rows"]}
        for j, c in enumerate(cases):
            if a.get(c) is not None and b.get(c) is not None:
                out[i, j] = float(a[c]) - float(b[c])
    return out


def metric_matrix(runs: Sequence[Mapping[str, Any]], metric: str) -> np.ndarray:
    """(seeds, cases) values of ``metric`` over one setting's runs (rows matched by ``case``; NaN where missing)."""
    cases = sorted({str(row.get("case")) for r in runs for row in r["rows"]})
    out = np.full((len(runs), len(cases)), np.nan)
    for i, run in enumerate(runs):
        vals = {str(row.get("case")): row.get(metric) for row in run["rows"]}
        for j, c in enumerate(cases):
            if vals.get(c) is not None:
                out[i, j] = float(vals[c])
    return out


def mean_interval(runs: Sequence[Mapping[str, Any]], metric: str, n_boot: int = 10000, seed: int = 0,
                  bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """A setting's mean ``metric`` and its bootstrap interval over test cases and seeds (``paired_bootstrap`` of
    the values themselves): the error bar of a learning-curve point; ``bounds``: the metric's range (``SCORE_RANGE``
    for Dice)."""
    return paired_bootstrap(metric_matrix(runs, metric), n_boot, seed=seed, bounds=bounds)


def paired_bootstrap(diff: np.ndarray, n_boot: int = 10000, level: float = 0.95, seed: int = 0,
                     bounds: tuple[float, float] | None = None) -> dict[str, Any]:
    """Mean of the paired differences ``diff`` (seeds, cases) and its bootstrap ``level`` interval (resampling seeds
    and cases with replacement; NaN pairs left out of each mean). ``n``: the pairs used. ``bounds``: the range the
    quantity cannot leave (a Dice in [0, 1], a difference of two in [-1, 1]); the interval, widened by
    ``small_sample_expansion`` about the mean, is cut to it (which never changes a verdict: 0 lies inside)."""
    d = np.atleast_2d(np.asarray(diff, dtype=float))
    ok = ~np.isnan(d)
    if not ok.any():
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_pairs": 0, "n_seeds": 0,
                "n_cases": 0, "level": level}
    rng = np.random.RandomState(seed)
    s, c = d.shape
    # how often replicate b draws each seed and each case; its mean = sum of count-weighted cells / their weight
    seeds = np.stack([np.bincount(rng.randint(0, s, s), minlength=s) for _ in range(n_boot)]).astype(float)
    cases = np.stack([np.bincount(rng.randint(0, c, c), minlength=c) for _ in range(n_boot)]).astype(float)
    num = np.einsum("bs,sc,bc->b", seeds, np.where(ok, d, 0.0), cases)
    den = np.einsum("bs,sc,bc->b", seeds, ok.astype(float), cases)
    reps = num[den > 0] / den[den > 0]
    alpha = (1 - level) / 2
    mean, lo, hi = float(d[ok].mean()), float(np.quantile(reps, alpha)), float(np.quantile(reps, 1 - alpha))
    k, df = small_sample_expansion(d, reps, level)
    lo, hi = mean - (mean - lo) * k, mean + (hi - mean) * k
    if bounds is not None:
        lo, hi = max(lo, float(bounds[0])), min(hi, float(bounds[1]))
    return {"mean": mean, "lo": lo, "hi": hi, "n_pairs": int(ok.sum()),
            "n_seeds": int(ok.any(1).sum()), "n_cases": int(ok.any(0).sum()), "level": level, "expansion": k, "df": df}


def small_sample_expansion(diff: np.ndarray, reps: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """How much the percentile interval is widened about the mean (>= 1), and the degrees of freedom behind it.

    A percentile bootstrap over a few seeds is too narrow: with 3 seeds of one test volume it is about [min, max]
    of the 3 values, so under no true difference it excludes 0 in about 27 % of draws instead of 5 %, and 3 seeds
    x 4 cases whose seed-to-seed spread dominates behave alike (about 17 %; both measured in
    tests/test_statistics.py). The interval is scaled by ``t(df) * se / (z * se_boot)`` when that is above 1:
    ``se`` the standard error of the mean of the (seeds, cases) table under the two-way random-effects model
    (seed, case and residual mean squares; one seed or one case: the plain standard error), ``df`` its
    Satterthwaite degrees of freedom (about seeds - 1 when the seeds differ most, cases - 1 when the cases do; never
    below the smaller of the two), ``se_boot`` the replicates' spread: the Student-t interval's small-sample width,
    the bootstrap's shape."""
    d = np.atleast_2d(np.asarray(diff, dtype=float))
    d = d[~np.isnan(d).all(1)][:, ~np.isnan(d).all(0)]
    full = d[:, ~np.isnan(d).any(0)]  # the cases every seed has (a few NaN cells leave their case out here)
    if full.shape[1] == 0:
        full = d[~np.isnan(d).any(1)]
    s, c = full.shape
    se_boot = float(np.std(reps)) if len(reps) else 0.0
    if s * c < 2 or se_boot <= 0:
        return 1.0, float("inf")
    if s == 1 or c == 1:
        x = full.ravel()
        terms = [(float(np.var(x, ddof=1)) / len(x), len(x) - 1)]
    else:  # mean squares of seeds, cases and residual; Var(mean) = (MS_seed + MS_case - MS_res) / (s c)
        grand = full.mean()
        rows, cols = full.mean(1), full.mean(0)
        ms_s = c * float(((rows - grand) ** 2).sum()) / (s - 1)
        ms_c = s * float(((cols - grand) ** 2).sum()) / (c - 1)
        ms_e = float(((full - rows[:, None] - cols[None, :] + grand) ** 2).sum()) / ((s - 1) * (c - 1))
        terms = [(ms_s / (s * c), s - 1), (ms_c / (s * c), c - 1), (-ms_e / (s * c), (s - 1) * (c - 1))]
        if ms_s + ms_c - ms_e <= ms_e:  # no seed or case effect to speak of: the residual alone
            terms = [(ms_e / (s * c), (s - 1) * (c - 1))]
    se2 = sum(v for v, _ in terms)
    if se2 <= 0:
        return 1.0, float("inf")
    # Satterthwaite; with the residual's negative weight it can fall below every component's own df (an interval
    # many times the data's range), so it is kept at least the seeds' or cases' df, whichever is smaller
    df = max(se2 ** 2 / sum(v ** 2 / f for v, f in terms), min(f for _, f in terms))
    q = (1 + level) / 2
    return max(1.0, float(stats.t.ppf(q, df) * math.sqrt(se2) / (stats.norm.ppf(q) * se_boot))), float(df)


def verdict(ci: Mapping[str, Any]) -> str:
    """``better`` / ``worse`` when the interval excludes 0, else ``no detectable difference``; ``n/a`` without an
    interval (no pairs); ``too few seeds or pairs to tell`` from fewer than ``MIN_PAIRS`` pairs or ``MIN_SEEDS``
    seeds (``n_pairs``, ``n_seeds``, when given)."""
    lo, hi, n = ci.get("lo", float("nan")), ci.get("hi", float("nan")), ci.get("n_pairs", MIN_PAIRS)
    if math.isnan(lo) or math.isnan(hi) or n == 0:
        return NO_PAIRS
    if n < MIN_PAIRS or ci.get("n_seeds", MIN_SEEDS) < MIN_SEEDS:
        return TOO_FEW
    return BETTER if lo > 0 else WORSE if hi < 0 else NO_DIFF


def compare_to_reference(runs: Mapping[str, Sequence[Mapping[str, Any]]], reference: str, metrics: Sequence[str],
                         n_boot: int = 10000, seed: int = 0, bounds: tuple[float, float] | None = None
                         ) -> dict[str, dict[str, dict[str, Any]]]:
    """For every setting but ``reference``: per metric the paired bootstrap of its difference to ``reference``
    (``paired_bootstrap`` + ``"verdict"``); ``bounds``: the metrics' range (``SCORE_RANGE``: differences in
    [-1, 1])."""
    diff_bounds = None if bounds is None else (bounds[0] - bounds[1], bounds[1] - bounds[0])
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, per_seed in runs.items():
        if name == reference or reference not in runs:
            continue
        out[name] = {}
        for m in metrics:
            ci = paired_bootstrap(paired_differences(per_seed, runs[reference], m), n_boot, seed=seed,
                                  bounds=diff_bounds)
            out[name][m] = {**ci, "verdict": verdict(ci)}
    return out
