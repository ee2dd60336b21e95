"""``volgan evaluate``: the harness from the command line on a 2D bundle (its own settings, trained and evaluated)."""

import json

import torch

from volgan.data import load_datalist


def test_evaluate_cli_on_a_2d_bundle(tmp_path):
    import numpy as np

    from tests.conftest import tiny_case, write_pair
    from volgan.apps.cli import main

    rng = np.random.RandomState(0)
    d = tmp_path / "vols"
    d.mkdir()
    for i in range(4):
        write_pair(d, f"c{i}", *tiny_case(rng, (24, 24, 6)))
    out = tmp_path / "ev"
    assert main(["evaluate", "--bundle", "wgan_pairs_seg_2d", "--dataset", str(d), "--output-dir", str(out),
                 "--quick", "--settings", "16-0 no aug", "8-8 no aug"]) == 0
    res = json.loads((out / "comparison" / "results.json").read_text(encoding="utf-8"))["results"]
    assert list(res) == ["16-0 no aug", "8-8 no aug"]
    assert all(0 <= r["summary"]["Dice"][0] <= 1 for r in res.values())


def test_evaluate_mmgan_with_a_generator_checkpoint(tiny_dataset, tmp_path):
    """The 3D path: split by case, synthesise perturbed pairs with the generator, compare settings."""
    from volgan.evaluation.harness import evaluate_bundle
    from volgan.networks import SNUNetGenerator

    folder, _ = tiny_dataset
    g = SNUNetGenerator(3, 5, 1, [4, 8, 16, 32])
    torch.save({"model": g.state_dict()}, tmp_path / "g.pt")
    out = tmp_path / "ev"
    res = evaluate_bundle("mmgan_label2mri_3d", str(folder), out, ckpt_path=str(tmp_path / "g.pt"), copies=1,
                          quick=True, gen_channels=[4, 8, 16, 32], settings=("real", "real+100%"))
    assert list(res["results"]) == ["real", "real+100%"]
    assert res["results"]["real+100%"]["n_train"] == 2 * res["results"]["real"]["n_train"]
    assert len(json.loads((out / "synthetic" / "datalist.json").read_text(encoding="utf-8"))["training"]) == 2


def test_evaluate_mmgan_one_generator_per_seed(tiny_dataset, tmp_path):
    """#20 item 2: --ckpt-path with one generator per seed: seed k's settings use generator k's pairs, so the
    bootstrap over seeds covers the GAN's variability; a count that matches neither 1 nor the seeds is one line."""
    import nibabel as nib
    import numpy as np
    import pytest

    from volgan.errors import VolganConfigError
    from volgan.evaluation.harness import evaluate_bundle
    from volgan.networks import SNUNetGenerator

    folder, _ = tiny_dataset
    ckpts = []
    for k in range(2):
        torch.manual_seed(k)
        torch.save(SNUNetGenerator(3, 5, 1, [4, 8, 16, 32]).state_dict(), tmp_path / f"g{k}.pt")
        ckpts.append(str(tmp_path / f"g{k}.pt"))
    out = tmp_path / "ev"
    res = evaluate_bundle("mmgan_label2mri_3d", str(folder), out, ckpt_path=ckpts, seeds=(0, 1), copies=1, quick=True,
                          gen_channels=[4, 8, 16, 32], settings=("real", "real+100%"))
    first = [load_datalist(out / f"synthetic_seed{k}" / "datalist.json")[0]["image"] for k in range(2)]
    a, b = (np.asarray(nib.load(f).dataobj) for f in first)
    assert not np.array_equal(a, b)  # two generators, two synthetic sets
    assert res["comparison"]["real+100%"]["WT"]["n_seeds"] == 2
    with pytest.raises(VolganConfigError, match="one per seed"):
        evaluate_bundle("mmgan_label2mri_3d", str(folder), tmp_path / "x", ckpt_path=ckpts, seeds=(0, 1, 2), quick=True)


def test_evaluate_cli_cycleshape_two_domains(tmp_path):
    """P2 from the command line: domain A = --dataset, domain B = --dataset-b, each split by case."""
    from tests.test_cycleshape import _domain
    from volgan.apps.cli import main

    a = _domain(tmp_path, "ct", 3, lambda x: 2 * x - 1000, seed=0)
    b = _domain(tmp_path, "mr", 3, lambda x: x, seed=1)
    out = tmp_path / "ev"
    maps = ["label_map_a={1: 1, 2: 2, 3: 3, 5: 4}", "label_map_b={1: 1, 2: 2, 3: 3, 5: 4}"]  # P2 has no default
    assert main(["evaluate", "--bundle", "cycleshape_ct_mri_3d", "--dataset", str(a), "--dataset-b", str(b),
                 "--output-dir", str(out), "--quick", "--test-fraction", "0.34", "--settings", "cyclegan",
                 "--set", *maps]) == 0
    res = json.loads((out / "comparison" / "results.json").read_text(encoding="utf-8"))["results"]
    assert list(res) == ["cyclegan"] and res["cyclegan"]["n_test"] == 1
    assert main(["evaluate", "--bundle", "cycleshape_ct_mri_3d", "--dataset", str(a), "--output-dir",
                 str(tmp_path / "x")]) == 2  # no domain B: one-line error
    assert main(["evaluate", "--bundle", "cycleshape_ct_mri_3d", "--dataset", str(a), "--dataset-b", str(b),
                 "--output-dir", str(tmp_path / "y"), "--quick"]) == 2  # no label maps: one line naming --label_map_a
    assert main(["evaluate", "--bundle", "cycleshape_ct_mri_3d", "--dataset", str(a), "--dataset-b", str(b),
                 "--output-dir", str(tmp_path / "z"), "--set", "label_map_a"]) == 2  # not ID=VALUE


def test_evaluate_mmgan_real_plus_filtered_synthetic(tiny_dataset, tmp_path):
    """Issue #19: "real + filtered synthetic" draws as many pairs as real+100 %, from the better-scored half."""
    import csv

    from volgan.evaluation.harness import evaluate_bundle
    from volgan.networks import SNUNetGenerator

    folder, _ = tiny_dataset
    torch.manual_seed(0)  # an untrained generator: its near-copies (left out by the filter) depend on its weights
    g = SNUNetGenerator(3, 5, 1, [4, 8, 16, 32])
    torch.save(g.state_dict(), tmp_path / "g.pt")
    out = tmp_path / "ev"
    # 3 copies per label map: the better half of the pairs that are not near-copies still covers 100 % of 2 cases
    res = evaluate_bundle("mmgan_label2mri_3d", str(folder), out, ckpt_path=str(tmp_path / "g.pt"), copies=3,
                          quick=True, gen_channels=[4, 8, 16, 32], settings=("real+100%", "real+100% filtered"))
    assert list(res["results"]) == ["real+100%", "real+100% filtered"]
    assert res["results"]["real+100% filtered"]["n_train"] == res["results"]["real+100%"]["n_train"]
    with open(out / "synthetic" / "quality.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and all(r["kept"] == "True" for r in rows)  # scored, nothing filtered out of the datalist


def test_evaluate_default_seeds_are_the_same_from_python_and_cli(tmp_path, monkeypatch):
    """No ``seeds`` given: three (enough for a verdict) from ``evaluate_bundle`` as from ``volgan evaluate``; one
    with ``quick``; explicit seeds pass through unchanged."""
    import numpy as np

    import volgan.evaluation.harness as harness
    from tests.conftest import tiny_case, write_pair
    from volgan.apps.cli import main
    from volgan.evaluation.statistics import MIN_SEEDS

    rng = np.random.RandomState(0)
    d = tmp_path / "vols"
    d.mkdir()
    for i in range(4):
        write_pair(d, f"c{i}", *tiny_case(rng, (24, 24, 6)))
    seen = []
    monkeypatch.setattr(harness, "compare_bundle_settings",
                        lambda *a, seeds, **k: seen.append(list(seeds)) or {"table": ""})
    harness.evaluate_bundle("wgan_pairs_seg_2d", str(d), tmp_path / "a")
    harness.evaluate_bundle("wgan_pairs_seg_2d", str(d), tmp_path / "b", quick=True)
    harness.evaluate_bundle("wgan_pairs_seg_2d", str(d), tmp_path / "c", seeds=(5, 7))
    for argv in ([], ["--quick"], ["--seeds", "5", "7"]):
        assert main(["evaluate", "--bundle", "wgan_pairs_seg_2d", "--dataset", str(d), "--output-dir",
                     str(tmp_path / "cli"), *argv]) == 0
    assert seen == [[0, 1, 2], [0], [5, 7]] * 2
    assert len(seen[0]) >= MIN_SEEDS
