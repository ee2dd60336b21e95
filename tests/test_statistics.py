"""The paired bootstrap and the verdict rule on cases with known answers (issue #20)."""

import numpy as np

from volgan.evaluation.report import format_comparison
from volgan.evaluation.statistics import (
    BETTER,
    NO_DIFF,
    NO_PAIRS,
    TOO_FEW,
    WORSE,
    compare_to_reference,
    mean_interval,
    paired_bootstrap,
    paired_differences,
    verdict,
)


def _runs(values, seed0=0):
    """runs of one setting: values (seeds, cases) -> [{"seed", "rows": [{"case", "WT"}]}]"""
    return [{"seed": seed0 + k, "rows": [{"case": f"c{j}", "WT": float(v)} for j, v in enumerate(row)]}
            for k, row in enumerate(values)]


def test_identical_settings_interval_contains_zero():
    rng = np.random.RandomState(0)
    ref = rng.rand(3, 10)
    ci = paired_bootstrap(paired_differences(_runs(ref), _runs(ref), "WT"))
    assert ci["mean"] == 0 and ci["lo"] <= 0 <= ci["hi"] and verdict(ci) == NO_DIFF
    # pure noise around the same mean: the interval covers 0 in most draws (95 % level)
    covered = 0
    for s in range(40):
        r = np.random.RandomState(s)
        a, b = r.rand(3, 12), r.rand(3, 12)
        covered += verdict(paired_bootstrap(paired_differences(_runs(a), _runs(b), "WT"), n_boot=2000)) == NO_DIFF
    assert covered >= 34


def test_a_shifted_setting_excludes_zero_both_ways():
    rng = np.random.RandomState(1)
    ref = rng.rand(3, 10) * 0.2 + 0.5
    up = ref + 0.1 + rng.randn(3, 10) * 0.02
    ci = paired_bootstrap(paired_differences(_runs(up), _runs(ref), "WT"))
    assert 0.08 < ci["mean"] < 0.12 and ci["lo"] > 0 and verdict(ci) == BETTER
    assert verdict(paired_bootstrap(paired_differences(_runs(ref), _runs(up), "WT"))) == WORSE
    assert (ci["n_seeds"], ci["n_cases"], ci["n_pairs"]) == (3, 10, 30)


def test_pairing_by_seed_and_case_and_nan_cells():
    ref = _runs([[0.5, 0.6, float("nan")]], seed0=7)
    other = _runs([[0.7, 0.6, 0.9]], seed0=7)
    other[0]["rows"].reverse()  # rows in another order: paired by case name
    d = paired_differences(other, ref, "WT")
    assert np.allclose(d[0, :2], [0.2, 0.0]) and np.isnan(d[0, 2])
    res = compare_to_reference({"real": ref, "real+aug": other}, "real", ["WT"], n_boot=500)
    assert list(res) == ["real+aug"] and res["real+aug"]["WT"]["n_pairs"] == 2
    assert verdict({"lo": float("nan"), "hi": 1.0}) == NO_PAIRS


def test_one_pair_one_seed_or_none_gets_no_verdict():
    """One seed x one case: the bootstrap interval is the pair itself (width 0), so even a large difference is not
    called better; one seed x many cases neither (its interval does not resample the training); a metric only one
    setting has (no pairs) is n/a, not 'no detectable difference'."""
    one = compare_to_reference({"real": _runs([[0.5]]), "gan": _runs([[0.9]])}, "real", ["WT"], n_boot=200)["gan"]["WT"]
    assert (one["lo"], one["hi"], one["n_pairs"]) == (one["mean"], one["mean"], 1) and one["verdict"] == TOO_FEW
    cases = compare_to_reference({"real": _runs([[0.5, 0.4, 0.6, 0.5]]), "gan": _runs([[0.9, 0.8, 0.9, 0.8]])},
                                 "real", ["WT"])["gan"]["WT"]
    assert cases["lo"] > 0 and (cases["n_seeds"], cases["n_pairs"]) == (1, 4) and cases["verdict"] == TOO_FEW
    three = compare_to_reference({"real": _runs([[0.5, 0.4, 0.6], [0.6, 0.5, 0.5], [0.4, 0.5, 0.6]]),
                                  "gan": _runs([[0.9, 0.8, 0.9], [0.9, 0.85, 0.8], [0.8, 0.9, 0.95]])},
                                 "real", ["WT"])["gan"]["WT"]
    assert three["n_seeds"] == 3 and three["verdict"] == BETTER
    none = compare_to_reference({"real": _runs([[float("nan")]]), "gan": _runs([[0.9]])}, "real", ["WT"])["gan"]["WT"]
    assert none["n_pairs"] == 0 and none["verdict"] == NO_PAIRS
    runs = {"real": _runs([[0.5]]), "gan": _runs([[0.9]])}
    for r in runs["gan"]:
        r["rows"][0]["MMD"] = 0.1  # a metric only the GAN setting has
    md = format_comparison(compare_to_reference(runs, "real", ["WT", "MMD"], n_boot=200), "real")
    assert md.splitlines()[-1] == "| gan | 1 seeds x 1 cases | +0.400 [+0.400, +0.400] too few seeds or pairs to tell | n/a |"


def test_learning_curve_table_says_na_for_a_point_without_pairs(tmp_path):
    """A learning-curve point whose setting has no finite value (e.g. an empty region in every test case) reads
    n/a in the table and the csv, not '+nan [+nan, +nan]'."""
    from volgan.evaluation.harness import write_learning_curve

    runs = {"real": _runs([[0.5, 0.4]]), "gan": _runs([[float("nan"), float("nan")]])}
    cmp = compare_to_reference(runs, "real", ["WT"], n_boot=200)
    points = [{"n_real": 1, "metric": "WT", "reference": "real", "settings": {
        name: {**{k: mean_interval(r, "WT")[k] for k in ("mean", "lo", "hi", "n_seeds", "n_cases")},
               "difference": cmp.get(name, {}).get("WT")} for name, r in runs.items()}}]
    table = write_learning_curve(tmp_path, points)["table"]
    assert "nan" not in table
    assert table.splitlines()[-1] == "| 1 | gan | n/a | n/a | n/a | 0 x 0 |"
    assert table.splitlines()[-2].startswith("| 1 | real | 0.450 [-0.011, 0.911] | reference |")


def _false_positive_rates(shape, seed_sd, reps=200):
    """Share of null draws (no true difference) whose interval excludes 0: (with the small-sample expansion,
    the plain percentile interval)."""
    rng, hits, plain = np.random.RandomState(0), 0, 0
    for r in range(reps):
        d = rng.randn(shape[0], 1) * seed_sd + rng.randn(*shape)
        ci = paired_bootstrap(d, n_boot=1000, seed=r)
        k = ci["expansion"]
        lo, hi = ci["mean"] - (ci["mean"] - ci["lo"]) / k, ci["mean"] + (ci["hi"] - ci["mean"]) / k
        hits += ci["lo"] > 0 or ci["hi"] < 0
        plain += lo > 0 or hi < 0
    return hits / reps, plain / reps


def test_few_seeds_interval_keeps_its_level():
    """A plain percentile bootstrap over 3 seeds (one test volume, as P2; or 3 seeds x 4 cases whose seed-to-seed
    spread dominates) excludes 0 far more often than 5 % when nothing differs; the expanded interval does not."""
    for shape, seed_sd in (((3, 1), 0.0), ((5, 1), 0.0), ((3, 4), 1.0)):
        fpr, plain = _false_positive_rates(shape, seed_sd)
        assert fpr <= 0.09 and plain >= 0.12, (shape, fpr, plain)
    # many cases, no seed effect: the expansion stays 1 (the two-way bootstrap alone is not too narrow there)
    d = np.random.RandomState(3).randn(3, 40)
    assert paired_bootstrap(d, n_boot=500)["expansion"] == 1.0


def test_interval_stays_inside_the_score_range():
    """The widened interval of a Dice mean stays in [0, 1] and that of a difference of two in [-1, 1] (P5's
    2-slice point, seeds 0.634 / 0.000 / 0.462, read [-0.615, 1.087] before), without changing any verdict;
    unbounded, the same numbers leave the range."""
    from volgan.evaluation.statistics import SCORE_RANGE

    real, aug = _runs([[0.634], [0.0], [0.462]]), _runs([[0.612], [0.594], [0.616]])
    free, cut = mean_interval(real, "WT"), mean_interval(real, "WT", bounds=SCORE_RANGE)
    assert free["lo"] < 0 and free["hi"] > 1
    assert cut["lo"] == 0.0 and cut["hi"] == 1.0 and cut["mean"] == free["mean"]
    shifted = _runs([[0.05], [0.9], [0.1]])
    for bounds in (None, SCORE_RANGE):
        d = compare_to_reference({"real": real, "aug": aug, "shifted": shifted}, "real", ["WT"], n_boot=2000,
                                 bounds=bounds)
        assert all(-1 <= d[k]["WT"]["lo"] <= d[k]["WT"]["hi"] <= 1 for k in d) == (bounds is not None)
        assert d["aug"]["WT"]["verdict"] == NO_DIFF
    tight = mean_interval(_runs([[0.70], [0.71], [0.72]]), "WT", bounds=SCORE_RANGE)
    assert 0.6 < tight["lo"] < 0.70 and 0.72 < tight["hi"] < 0.8  # inside the range: not touched
