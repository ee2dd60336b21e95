"""The paired bootstrap and the verdict rule on cases with known answers (issue #20)."""

import numpy as np

from volgan.evaluation.statistics import (
    BETTER,
    NO_DIFF,
    WORSE,
    compare_to_reference,
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
    assert verdict({"lo": float("nan"), "hi": 1.0}) == NO_DIFF
