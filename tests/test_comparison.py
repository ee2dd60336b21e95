"""The evidence harness (issue #10): settings, seeds, resumability, outputs, learning curve, ``volgan evaluate``."""

from pathlib import Path

import pytest

from volgan.evaluation import harness as comparison
from volgan.evaluation import SEGMENTATION_SETTINGS
from volgan.evaluation.harness import compare_segmentation, learning_curve
from volgan.errors import VolganConfigError

FAST = dict(iterations=2, segmentor={"channels": [4, 8, 16, 32], "patch_size": [16, 16, 16], "batch_size": 1},
            roi_size=[32, 32, 32], device="cpu")


def test_every_setting_seeds_outputs_and_resume(tiny_dataset, tmp_path, monkeypatch):
    _, items = tiny_dataset
    real, test, synthetic = items[:2], items[2:], [dict(it, source=it["label"]) for it in items[:2]] * 5
    out = tmp_path / "cmp"
    res = compare_segmentation(real, test, synthetic, out, seeds=(0, 1), **FAST)
    assert list(res["results"]) == list(SEGMENTATION_SETTINGS)
    n_train = {k: v["n_train"] for k, v in res["results"].items()}
    assert n_train == {"real": 2, "synthetic": 10, "real+100%": 4, "real+300%": 8, "real+500%": 12,
                       "pretrain+finetune": 1}  # fine-tuning on 10 % of the real cases, at least one
    for name, r in res["results"].items():
        assert r["seeds"] == [0, 1]
        mean, sd = r["summary"]["WT"]
        assert 0.0 <= mean <= 1.0 and sd >= 0.0
    assert {"HD95 WT", "WT", "TC"} <= set(res["results"]["real"]["summary"])
    for f in ("results.csv", "results.md", "results.json", "dice.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0
    rows = (out / "results.csv").read_text(encoding="utf-8").splitlines()
    assert len(rows) == 1 + 6 * 2 * len(test)
    # resumable: nothing is retrained when every (setting, seed) result exists
    monkeypatch.setattr(comparison, "train_segmentor", lambda *a, **k: pytest.fail("retrained"))
    again = compare_segmentation(real, test, synthetic, out, seeds=(0, 1), **FAST)
    assert again["table"] == res["table"]


def test_too_few_synthetic_pairs_is_a_config_error(tiny_dataset, tmp_path):
    from volgan.errors import VolganConfigError

    _, items = tiny_dataset
    with pytest.raises(VolganConfigError, match="synthetic pairs"):
        compare_segmentation(items[:2], items[2:], items[:1], tmp_path / "x", settings=("real+300%",), **FAST)
    with pytest.raises(VolganConfigError, match="unknown setting"):
        compare_segmentation(items[:2], items[2:], items, tmp_path / "x", settings=("joint",), **FAST)


def test_learning_curve_restricts_synthetic_to_the_chosen_cases(tiny_dataset, tmp_path, monkeypatch):
    _, items = tiny_dataset
    synthetic = [dict(it, source=it["label"]) for it in items[:2]]
    seen = []
    real_compare = comparison.compare_segmentation

    def spy(real, test, syn, *a, **k):
        seen.append((len(real), sorted(s["source"] for s in syn)))
        return real_compare(real, test, syn, *a, **k)

    monkeypatch.setattr(comparison, "compare_segmentation", spy)
    res = learning_curve(items[:2], items[2:], synthetic, tmp_path / "lc", sizes=[1, 2], **FAST)
    assert {p["metric"] for p in res["points"]} == {"WT"}
    assert [p["n_real"] for p in res["points"]] == [1, 2]
    assert seen == [(1, [items[0]["label"]]), (2, sorted([items[0]["label"], items[1]["label"]]))]
    for f in ("learning_curve.md", "learning_curve.csv", "learning_curve.json", "learning_curve.png"):
        assert (tmp_path / "lc" / f).is_file()
    for p in res["points"]:  # every point: mean with its interval per setting, the difference to real only
        real, syn = p["settings"]["real"], p["settings"]["real+100%"]
        assert real["lo"] <= real["mean"] <= real["hi"] and real["difference"] is None
        assert syn["difference"]["lo"] <= syn["difference"]["mean"] <= syn["difference"]["hi"]
        d = syn["difference"]  # one seed (the default): its interval is over the test cases only, no verdict
        assert d["n_seeds"] == 1 and d["verdict"] == "too few seeds or pairs to tell", d
    assert "| 2 | real+100% |" in res["table"] and "95 % bootstrap" in res["table"]


@pytest.mark.parametrize("sizes,settings", [
    ([1], ("real", "real+100% gaussian")),
    pytest.param([1, 2], ("real", "real+100%", "real+100% gaussian"), marks=pytest.mark.slow)])
def test_learning_curve_trains_one_gan_per_size_and_seed(tiny_dataset, tmp_path, sizes, settings, monkeypatch):
    """#20 items 2-3: with --sizes, MM-GAN is trained on exactly the first k cases with each seed, its synthetic
    pairs and the per-label Gaussian baseline come from those cases' label maps only, and each seed's settings use
    that seed's pools (the seeds resample the GAN as well as the segmentor)."""
    import os

    import nibabel as nib
    import numpy as np

    from volgan.data import load_datalist
    from volgan.evaluation.harness import evaluate_bundle

    folder, items = tiny_dataset
    out = tmp_path / "ev"
    trained = []  # (cases, seed) of every generator the harness trains (the real run_bundle does the work)
    real_run = comparison.run_bundle
    monkeypatch.setattr(comparison, "run_bundle", lambda name, config, **kw: trained.append(
        (sorted(it["label"] for it in kw["dataset_dir"]), kw["seed"])) or real_run(name, config, **kw))
    res = evaluate_bundle("mmgan_label2mri_3d", str(folder), out, test=items[2:], seeds=(0, 1), copies=1, quick=True,
                          sizes=sizes, settings=settings)
    assert [p["n_real"] for p in res["points"]] == sizes
    for i, k in enumerate(sizes):
        chosen = {os.path.abspath(it["label"]) for it in items[:k]}
        pools = {}
        for seed in (0, 1):
            d = out / "learning_curve" / f"n{k}" / f"pools_seed{seed}"
            assert (d / "gan" / "model.pt").is_file() and (d / "gan" / "finished").is_file()
            syn = load_datalist(d / "synthetic" / "datalist.json")
            assert len(syn) == k and {os.path.abspath(s["source"]) for s in syn} <= chosen
            assert len(load_datalist(d / "gaussian" / "datalist.json")) == k
            pools[seed] = np.asarray(nib.load(syn[0]["image"]).dataobj)
            assert (sorted(chosen), seed) in [([os.path.abspath(x) for x in t[0]], t[1]) for t in trained]
        assert not np.array_equal(pools[0], pools[1])  # one GAN (and one synthetic set) per seed
        point = res["points"][i]["settings"]
        assert set(point) == set(settings) and all(v["n_seeds"] == 2 for v in point.values())
    assert len(trained) == 2 * len(sizes)
    assert (out / "learning_curve" / "learning_curve.png").is_file()
    # a synthesis cut short (its pairs on disk, no datalist yet) is redone on resume, the finished GAN kept
    d = out / "learning_curve" / f"n{sizes[0]}" / "pools_seed0"
    for part in ("synthetic", "gaussian"):
        (d / part / "datalist.json").unlink()
    evaluate_bundle("mmgan_label2mri_3d", str(folder), out, test=items[2:], seeds=(0, 1), copies=1, quick=True,
                    sizes=sizes, settings=settings)
    assert len(trained) == 2 * len(sizes)
    assert all(len(load_datalist(d / part / "datalist.json")) == sizes[0] for part in ("synthetic", "gaussian"))


def test_budget_scales_the_paper_budget():
    """--budget F: the method's budget options (train.yaml defaults, or the harness segmentor's iterations) x F."""
    from volgan.evaluation.harness import budget_overrides

    assert budget_overrides("wgan_pairs_seg_2d", 0.1) == {"gan_iterations": 1000, "max_epochs": 100,
                                                           "patience_iterations": 300}
    assert budget_overrides("mmgan_label2mri_3d", 0.05) == {"iterations": 10, "max_epochs": 10}
    assert budget_overrides("gan_pretrain_seg_2d", 0.001) == {"gan_epochs": 1, "finetune_epochs": 1}  # at least 1
    with pytest.raises(VolganConfigError, match="--budget"):
        budget_overrides("mmgan_label2mri_3d", 0)


def test_compare_cycleshape_modes_with_the_cyclegan_reference(tmp_path, monkeypatch):
    """P2 in the harness: same budget per mode, cyclegan trained first and used as the S-score reference, four
    metrics per mode, resumable (a finished mode is not retrained)."""
    from tests.test_cycleshape import TINY, _domain
    from volgan.evaluation import harness as comparison

    a = _domain(tmp_path, "ct", 2, lambda x: 2 * x - 1000, seed=0)
    b = _domain(tmp_path, "mr", 2, lambda x: x, seed=1)
    common = dict(TINY, max_epochs=2, pretrain_s_epochs=1, pretrain_gd_epochs=1, roi_size=[16, 16, 16])
    calls = []

    orig = comparison.run_bundle

    def spy(name, config, **kw):
        calls.append((config, kw.get("mode"), kw.get("ref_dir")))
        return orig(name, config, **kw)

    monkeypatch.setattr(comparison, "run_bundle", spy)
    res = comparison.compare_cycleshape(str(a), str(b), str(a), str(b), tmp_path / "cmp", modes=("ours", "cyclegan"),
                                        common=common)
    # evaluate.yaml is an override of train.yaml: it gets the training run's overrides (the mode among them)
    assert [c[:2] for c in calls] == [("train", "cyclegan"), ("evaluate", "cyclegan"), ("train", "ours"),
                                      ("evaluate", "ours")]
    assert all(c[2] == str(tmp_path / "cmp" / "seed0" / "cyclegan") for c in calls if c[0] == "evaluate")
    table = res["table"]
    assert "| cyclegan |" in table and "| ours |" in table and "S-score A->B" in table and "Dice S_B (real B)" in table
    for mode in ("cyclegan", "ours"):
        summary = res["results"][mode]["summary"]
        assert set(summary) == set(comparison.CYCLESHAPE_METRICS)
        assert all(0.0 <= mean <= 1.0 for mean, _ in summary.values() if mean == mean)
    # every other mode's paired difference to cyclegan, by seed (one seed here: too few seeds for a verdict)
    assert set(res["comparison"]) == {"ours"} and set(res["comparison"]["ours"]) == set(comparison.CYCLESHAPE_METRICS)
    assert "Difference to **cyclegan**" in table and "| ours | 1 seeds x 1 cases |" in table
    calls.clear()
    comparison.compare_cycleshape(str(a), str(b), str(a), str(b), tmp_path / "cmp", modes=("cyclegan", "ours"),
                                  common=common)
    assert calls == []
    with pytest.raises(VolganConfigError, match="cyclegan"):
        comparison.compare_cycleshape(str(a), str(b), str(a), str(b), tmp_path / "x", modes=("ours",))


def test_baselines_augmentation_and_per_label_gaussian(tiny_dataset, tmp_path):
    """Issue #20's baselines: real + standard augmentation, real + per-label Gaussian images of the same label maps,
    augmentation + synthetic; each with its paired bootstrap interval against real only."""
    import nibabel as nib
    import numpy as np

    from volgan.evaluation.harness import parse_setting
    from volgan.synthesis import LabelGaussianModel, gaussian_label_pairs

    _, items = tiny_dataset
    real, test = items[:2], items[2:]
    model = LabelGaussianModel(sigma=0).fit(real)
    img, lab = (np.asarray(nib.load(real[0][k]).dataobj) for k in ("image", "label"))
    assert abs(model.params[4][0] - np.concatenate([np.asarray(nib.load(r["image"]).dataobj)[
        np.asarray(nib.load(r["label"]).dataobj) == 4] for r in real]).astype(np.float64).mean()) < 1e-3
    pairs = gaussian_label_pairs(real, [r["label"] for r in real] * 1, tmp_path / "g", seed=0)
    g = np.asarray(nib.load(pairs[0]["image"]).dataobj)
    assert g.shape == lab.shape and (g[lab == 0] == 0).all() and g[lab == 4].mean() > g[lab == 3].mean()
    again = gaussian_label_pairs(real, [r["label"] for r in real], tmp_path / "g2", seed=0)
    assert np.array_equal(np.asarray(nib.load(again[0]["image"]).dataobj), g)  # seeded
    synthetic = [dict(it, source=it["label"]) for it in real] * 2
    settings = ("real", "real+aug", "real+100% gaussian", "real+aug+100%")
    res = compare_segmentation(real, test, synthetic, tmp_path / "cmp", settings=settings, seeds=(0, 1),
                               gaussian=pairs, **FAST)
    assert list(res["results"]) == list(settings)
    assert {k: v["n_train"] for k, v in res["results"].items()} == {"real": 2, "real+aug": 2, "real+100% gaussian": 4,
                                                                    "real+aug+100%": 4}
    assert set(res["comparison"]) == set(settings[1:]) and "95 % paired bootstrap" in res["table"]
    assert res["comparison"]["real+aug"]["WT"]["n_seeds"] == 2
    assert parse_setting("real+aug+300%") == (True, "gan", 300.0) and parse_setting("real") == (False, None, 0.0)
    with pytest.raises(VolganConfigError, match="unknown setting"):
        parse_setting("real+50% filtered")
    with pytest.raises(VolganConfigError, match="Gaussian baseline pairs"):
        compare_segmentation(real, test, synthetic, tmp_path / "x", settings=("real+100% gaussian",), **FAST)


def test_synthesis_pools_with_a_validation_split_stop_on_it_and_use_the_best_generator(
        tiny_dataset, tiny_train_overrides, tmp_path, monkeypatch):
    """#20 item 4: with ``validation`` the generator trains on the other chosen cases only, is validated (and
    stopped) on the held-out ones, and synthesis uses its best generator, still from every chosen label map."""
    import csv
    import os

    from volgan.data import load_datalist
    from volgan.evaluation.harness import train_synthesis_pools

    _, items = tiny_dataset
    trained, used = [], []
    real_run, real_pools = comparison.run_bundle, comparison.synthetic_pools
    monkeypatch.setattr(comparison, "run_bundle", lambda name, config, **kw: trained.append(kw) or
                        real_run(name, config, **kw))
    monkeypatch.setattr(comparison, "synthetic_pools", lambda cases, ckpt, *a, **k: used.append(Path(ckpt)) or
                        real_pools(cases, ckpt, *a, **k))
    train_kw = dict(tiny_train_overrides, max_epochs=4, val_interval=1, val_patience=1)
    pools = train_synthesis_pools("mmgan_label2mri_3d", train_kw, copies=1, validation=[items[1]],
                                  roi_size=[32, 32, 32])
    made = pools(items[:2], 0, tmp_path / "pools")
    (kw,) = trained
    assert [it["label"] for it in kw["dataset_dir"]] == [items[0]["label"]]
    assert [it["label"] for it in kw["val_dataset_dir"]] == [items[1]["label"]]
    with open(tmp_path / "pools" / "gan" / "val_curve.csv", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) >= 2
    assert used == [tmp_path / "pools" / "gan" / "model_best.pt"]
    syn = load_datalist(tmp_path / "pools" / "synthetic" / "datalist.json")
    assert {os.path.abspath(s["source"]) for s in syn} == {os.path.abspath(it["label"]) for it in items[:2]}
    assert len(made["gan"]) == len(made["gaussian"]) == 2
    with pytest.raises(VolganConfigError, match="validation cases must be some, not all"):
        pools(items[1:2], 0, tmp_path / "all_held")
