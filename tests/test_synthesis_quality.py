"""Synthesis a user can trust (issue #19 items 2-5): a quality score on every synthetic pair (segmentor Dice,
intensity distance, memorisation), the filter and quality.csv, set-level distribution metrics with known answers,
the contact sheet, and synthesis sharded with torchrun (identical to one process, resumable)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import BUNDLES, tiny_case, write_pair
from volgan.bundle import run_bundle
from volgan.errors import VolganConfigError, VolganDataError
from volgan.evaluation import PairQuality, intensity_distance, normalised_cross_correlation, pair_quality, train_segmentor
from volgan.evaluation.distribution import (
    RandomConvFeatures,
    distribution_metrics,
    gaussian_mmd,
    ms_ssim_diversity,
    normalised_volume,
)
from volgan.evaluation.quality import filter_pairs
from volgan.io import save_weights

GEN = dict(device="cpu", gen_channels=[4, 8, 16, 32], roi_size=[16, 16, 16])


def _cases(folder: Path, n: int, seed: int, shape=(24, 24, 24), prefix="case") -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    return [write_pair(folder, f"{prefix}{i}", *tiny_case(rng, shape)) for i in range(n)]


@pytest.fixture(scope="module")
def real_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    return _cases(root / "train", 4, 0), _cases(root / "held", 2, 1, prefix="held")


def test_intensity_distance_and_ncc_known_answers():
    rng = np.random.RandomState(0)
    a = rng.randn(5000)
    assert intensity_distance(a, a) == 0.0
    assert abs(intensity_distance(a, a + 0.7) - 0.7) < 1e-9  # W1 of a shift is the shift
    assert np.isnan(intensity_distance(a, []))
    x = torch.as_tensor(rng.rand(3, 8, 8, 8))
    ncc = normalised_cross_correlation(x, torch.cat([x[:1] * 3 + 1, torch.as_tensor(rng.rand(1, 8, 8, 8))]))
    assert abs(float(ncc[0, 0]) - 1.0) < 1e-9 and float(ncc[1, 1]) < 0.5


def test_pair_quality_flags_copies_and_intensity_shifts(real_sets, tmp_path):
    train, held = real_sets
    q = PairQuality(train, held_out=held)
    copy = q.score(train[2]["image"], train[2]["label"])  # a training image passed off as synthetic
    assert copy["near_copy"] and not copy["kept"] and "near-copy" in copy["reasons"]
    assert copy["nearest_real"] == train[2]["image"] and copy["nearest_real_ncc"] > 0.999
    new = q.score(held[0]["image"], held[0]["label"])  # a real image the generator never saw: not a copy
    assert not new["near_copy"] and new["kept"] and new["nearest_real_ncc"] <= new["held_out_ncc_max"] + 1e-9
    # the lesion (label 4) 3x brighter: its intensity distance grows, the other labels' barely move
    img, lab = (np.asarray(nib.load(held[0][k]).dataobj) for k in ("image", "label"))
    brighter = np.where(lab == 4, img * 3, img)
    shifted = write_pair(tmp_path, "shifted", brighter, lab)
    s = q.score(shifted["image"], shifted["label"])
    assert s["intensity_w1_4"] > new["intensity_w1_4"] + 0.5
    assert set(q.columns()) <= set(s) | {"dice_mean"}
    # a threshold makes it fail; leave-one-out baseline when no held-out set is given
    strict = PairQuality(train, max_intensity_distance=0.5 * s["intensity_w1_mean"] + 0.5 * new["intensity_w1_mean"])
    assert "intensity_w1_mean >" in strict.score(shifted["image"], shifted["label"])["reasons"]
    assert "intensity_w1_mean >" not in strict.score(held[0]["image"], held[0]["label"])["reasons"]
    assert strict.score(train[0]["image"], train[0]["label"])["near_copy"]


def test_pair_quality_segmentor_dice_per_label(real_sets, tmp_path):
    train, held = real_sets
    seg = train_segmentor(train, iterations=4, patch_size=(16, 16, 16), channels=(4, 8, 16, 32), device="cpu",
                          progress=False)
    save_weights(seg, tmp_path / "seg" / "model.pt")
    q = PairQuality(train, segmentor=str(tmp_path / "seg" / "model.pt"), min_dice=1.01)  # from model.pt + model.json
    row = q.score(held[1]["image"], held[1]["label"])
    assert all(0.0 <= row[f"dice_{v}"] <= 1.0 for v in (1, 2, 3, 4))
    assert not row["kept"] and "dice_mean < 1.01" in row["reasons"]
    assert q.columns()[4:9] == ["dice_mean", "dice_1", "dice_2", "dice_3", "dice_4"]


def test_pair_quality_bad_inputs_name_the_file(real_sets, tmp_path):
    train, _ = real_sets
    with pytest.raises(VolganConfigError, match="quality_reference"):
        pair_quality(None, min_dice=0.5)
    assert pair_quality(None) is None
    with pytest.raises(VolganDataError, match="no .*pairs"):
        PairQuality([])
    img, lab = tiny_case(np.random.RandomState(5), (24, 24, 24))
    bad = write_pair(tmp_path, "bad", img[:20], lab)
    with pytest.raises(VolganDataError, match="bad"):
        PairQuality(train).score(bad["image"], bad["label"])
    with pytest.raises(VolganDataError, match="no network definition"):
        torch.save({}, tmp_path / "plain.pt")
        PairQuality(train, segmentor=str(tmp_path / "plain.pt"))


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    """MM-GAN trained 1 epoch on 3 tiny cases (the bundle's train.yaml)."""
    root = tmp_path_factory.mktemp("gen")
    data = _cases(root / "data", 3, 0)
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(root / "data"), output_dir=str(root / "run"),
               max_epochs=1, device="cpu", patch_size=[16, 16, 16], gen_channels=[4, 8, 16, 32],
               disc_channels=[8, 16, 16], amp=False)
    return root, data, root / "run" / "model.pt"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_synthesis_writes_quality_csv_contact_sheet_and_filters(generator, real_sets, tmp_path):
    root, data, ckpt = generator
    train, held = real_sets
    labels = tmp_path / "labels"
    labels.mkdir()
    for it in data:
        shutil.copy(it["label"], labels / Path(it["label"]).name)
    out = tmp_path / "synth"
    run_bundle("mmgan_label2mri_3d", "inference", input=str(labels), ckpt_path=str(ckpt), output_dir=str(out),
               quality_reference=[{"image": it["image"], "label": it["label"]} for it in train],
               quality_held_out=[{"image": it["image"], "label": it["label"]} for it in held],
               max_intensity_distance=0.0, **GEN)
    rows = _rows(out / "quality.csv")
    assert len(rows) == 3 and {"kept", "intensity_w1_1", "nearest_real_ncc", "near_copy"} <= set(rows[0])
    assert all(r["kept"] == "False" and "intensity_w1_mean > 0" in r["reasons"] for r in rows)
    dl = json.loads((out / "datalist.json").read_text(encoding="utf-8"))["training"]
    assert dl == []  # every pair failed the threshold: none enters the datalist, all are listed and kept on disk
    prov = json.loads((out / "case0_synth.json").read_text(encoding="utf-8"))
    assert prov["quality"]["kept"] is False and prov["quality"]["image"] == "case0_synth.nii.gz"
    assert (out / "contact_sheet.png").stat().st_size > 5000
    # scores without filters (the harness's way): every pair kept and scored
    out2 = tmp_path / "synth2"
    run_bundle("mmgan_label2mri_3d", "inference", input=str(labels), ckpt_path=str(ckpt), output_dir=str(out2),
               quality_reference=[{"image": it["image"], "label": it["label"]} for it in train], reject_copies=False,
               **GEN)
    assert len(json.loads((out2 / "datalist.json").read_text(encoding="utf-8"))["training"]) == 3
    kept = filter_pairs(json.loads((out2 / "datalist.json").read_text(encoding="utf-8"))["training"],
                        out2 / "quality.csv", keep_fraction=0.34)
    w1 = {r["image"]: float(r["intensity_w1_mean"]) for r in _rows(out2 / "quality.csv")}
    assert len(kept) == 1 and w1[Path(kept[0]["image"]).name] == min(w1.values())


def test_contact_sheet_without_quality(generator, tmp_path):
    root, data, ckpt = generator
    out = tmp_path / "s"
    run_bundle("mmgan_label2mri_3d", "inference", input=data[0]["label"], ckpt_path=str(ckpt), output_dir=str(out),
               **GEN)
    assert (out / "contact_sheet.png").is_file() and not (out / "quality.csv").exists()


def _torchrun_inference(port: int, **overrides) -> subprocess.CompletedProcess:
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    cfg = BUNDLES / "mmgan_label2mri_3d" / "configs" / "inference.yaml"
    args = [f"--{k}=" + (json.dumps(v).replace(" ", "") if isinstance(v, (list, dict)) else str(v))
            for k, v in overrides.items()]
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", str(port), "-m", "monai.bundle", "run",
           "--config_file", str(cfg), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _volumes(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(nib.load(p).dataobj) for p in sorted(folder.glob("*.nii.gz"))}


def test_sharded_synthesis_equals_one_process_and_resumes(generator, tmp_path):
    root, data, ckpt = generator
    more = _cases(tmp_path / "more", 4, 7, prefix="more")
    labels = tmp_path / "labels"
    labels.mkdir()
    for it in data + more:  # 7 label maps over 2 ranks: 4 + 3
        shutil.copy(it["label"], labels / Path(it["label"]).name)
    common = dict(input=str(labels), ckpt_path=str(ckpt), perturb=True, seed=3,
                  quality_reference=str(root / "data"), **GEN)
    one = tmp_path / "one"
    run_bundle("mmgan_label2mri_3d", "inference", output_dir=str(one), **common)
    two = tmp_path / "two"
    r = _torchrun_inference(29571, output_dir=str(two), **common)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _volumes(one), _volumes(two)
    assert sorted(a) == sorted(b) and len(a) == 14
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    dl1 = json.loads((one / "datalist.json").read_text(encoding="utf-8"))["training"]
    dl2 = json.loads((two / "datalist.json").read_text(encoding="utf-8"))["training"]
    assert sorted(map(json.dumps, dl1)) == sorted(map(json.dumps, dl2))
    assert sorted(r["image"] for r in _rows(two / "quality.csv")) == sorted(r["image"] for r in _rows(one / "quality.csv"))
    assert not list(two.glob(".staging*")) and (two / "contact_sheet.png").is_file()
    # a rerun with --resume skips the finished cases; a case whose provenance is missing is redone
    (two / "case1_p3_synth.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in two.glob("*_synth.nii.gz")}
    r = _torchrun_inference(29572, output_dir=str(two), resume=True, **common)
    assert r.returncode == 0, r.stderr[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in two.glob("*_synth.nii.gz")}
    assert [k for k in before if before[k] != after[k]] == ["case1_p3_synth.nii.gz"]
    dl3 = json.loads((two / "datalist.json").read_text(encoding="utf-8"))["training"]
    assert sorted(map(json.dumps, dl3)) == sorted(map(json.dumps, dl1))  # the same set as one uninterrupted run
    assert sorted(r["image"] for r in _rows(two / "quality.csv")) == sorted(r["image"] for r in _rows(one / "quality.csv"))
    assert len(_rows(two / "quality.csv")) == 7


def test_resume_refuses_another_generators_folder(generator, tmp_path):
    root, data, ckpt = generator
    out = tmp_path / "s"
    run_bundle("mmgan_label2mri_3d", "inference", input=data[0]["label"], ckpt_path=str(ckpt), output_dir=str(out), **GEN)
    other = tmp_path / "other.pt"
    state = torch.load(ckpt, weights_only=True)
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, other)
    shutil.copy(str(ckpt).replace(".pt", ".json"), tmp_path / "other.json")
    with pytest.raises(VolganConfigError, match="other weights"):
        run_bundle("mmgan_label2mri_3d", "inference", input=str(root / "data"), ckpt_path=str(other),
                   output_dir=str(out), resume=True, **GEN)


def test_distribution_metrics_known_answers(real_sets, tmp_path):
    train, held = real_sets
    same = distribution_metrics(train, train, radiomics=True)["rows"]["synthetic vs real"]
    assert same["FID 2.5D (mean over planes)"] < 1e-3 and abs(same["MMD 2.5D (mean over planes)"]) < 1e-12
    assert same["FRD"] < 1e-3
    # the lesions brighter in every image: every distance grows
    shifted = []
    for i, it in enumerate(train):
        img, lab = (np.asarray(nib.load(it[k]).dataobj) for k in ("image", "label"))
        shifted.append(write_pair(tmp_path, f"bright{i}", np.where(lab == 4, img * 2.5, img), lab))
    far = distribution_metrics(train, shifted)
    row = far["rows"]["synthetic vs real"]
    assert row["FID 2.5D (mean over planes)"] > 10 * max(same["FID 2.5D (mean over planes)"], 1e-3)
    assert row["MMD 2.5D (mean over planes)"] > 1e-3 and row["FRD"] > 1.0
    assert "real half vs half" in far["rows"] and far["features"].startswith("RandomConvFeatures")
    # copies: no diversity (MS-SSIM 1) while the real set has some
    copies = [train[0]] * 3
    div = distribution_metrics(train, copies, radiomics=False)["rows"]["synthetic vs real"]
    assert div["MS-SSIM among synthetic"] > 0.999 and div["MS-SSIM among real"] < 0.99


def test_metric_building_blocks():
    f = torch.randn(40, 6)
    assert gaussian_mmd(f, f) == pytest.approx(0.0, abs=1e-12) and gaussian_mmd(f, f + 3) > 0.1
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    e1, e2 = RandomConvFeatures(0), RandomConvFeatures(0)
    assert torch.equal(e1(x), e2(x)) and e1(x).shape == (4, 32)
    v = np.random.RandomState(0).rand(20, 20, 20).astype(np.float32) * 2 - 1
    assert ms_ssim_diversity([v, v]) == pytest.approx(1.0, abs=1e-5)
    assert np.isnan(ms_ssim_diversity([v]))


def test_quality_command_line(real_sets, tmp_path):
    train, held = real_sets
    real = Path(train[0]["image"]).parent
    synth = tmp_path / "synth"
    synth.mkdir()
    for it in held:
        for k in ("image", "label"):
            shutil.copy(it[k], synth / Path(it[k]).name)
    cmd = [sys.executable, "-m", "volgan", "quality", str(real), str(synth), "--no-radiomics"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "FID 2.5D" in r.stdout and "real half vs half" in r.stdout
    assert {"quality_metrics.json", "quality_metrics.png", "quality_metrics.md"} <= {p.name for p in synth.iterdir()}
    # bad inputs: one line naming the file, non-zero, nothing written
    nolabels = tmp_path / "nolabels"
    nolabels.mkdir()
    shutil.copy(held[0]["image"], nolabels / "x_synth.nii.gz")
    (nolabels / "datalist.json").write_text(json.dumps({"training": [{"image": "x_synth.nii.gz"}]}), encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    img, lab = tiny_case(np.random.RandomState(9), (24, 24, 24))
    mism = tmp_path / "mismatch"
    write_pair(mism.mkdir() or mism, "m", img[:, :20], lab)
    for bad, where in ((nolabels, "x_synth"), (empty, "empty"), (mism, "m_")):
        r = subprocess.run([sys.executable, "-m", "volgan", "quality", str(real), str(bad), "--no-radiomics"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, (bad, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("volgan: error:") and where in lines[0], r.stderr
        assert not list(bad.glob("quality_metrics*"))


def test_normalised_volume_is_scale_free(real_sets):
    train, _ = real_sets
    img = np.asarray(nib.load(train[0]["image"]).dataobj)
    v1, _ = normalised_volume(train[0]["image"], train[0]["label"])
    assert v1.min() >= -1 and v1.max() <= 1 and img.max() > 1


def test_distribution_metrics_on_2d_slices(tmp_path):
    """The 2D methods' images: each image is one plane; identical sets 0, copies no diversity."""
    rng = np.random.RandomState(0)
    items = []
    for i in range(4):
        img, lab = tiny_case(rng, (32, 32, 3))
        items.append(write_pair(tmp_path, f"s{i}", img[:, :, 1], lab[:, :, 1]))
    res = distribution_metrics(items, items, spatial_dims=2)
    row = res["rows"]["synthetic vs real"]
    assert "FID slice" in row and row["FID 2.5D (mean over planes)"] < 1e-3 and row["FRD"] < 1e-3
    assert distribution_metrics(items, [items[0]] * 3, spatial_dims=2, radiomics=False)["rows"][
        "synthetic vs real"]["MS-SSIM among synthetic"] > 0.999
