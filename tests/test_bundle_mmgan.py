"""The MM-GAN bundle end to end on tiny data: train 2 epochs, resume, infer, refuse bad input, write nothing partial."""

import json
import math
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import BUNDLES
from volgan.bundle import run_bundle
from volgan.errors import VolganConfigError, VolganDataError

BUNDLE = BUNDLES / "mmgan_label2mri_3d"


def _ckpt(path):
    return torch.load(path, weights_only=True, map_location="cpu")


@pytest.fixture
def trained(tmp_path, tiny_dataset, tiny_train_overrides):
    folder, items = tiny_dataset
    out = tmp_path / "run"
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(folder), output_dir=str(out), max_epochs=2,
               **tiny_train_overrides)
    return folder, items, out


def test_train_writes_checkpoints_model_and_logs(trained):
    folder, items, out = trained
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_1.pt", "checkpoint_2.pt"]
    ck = _ckpt(out / "checkpoint_2.pt")  # weights-only loadable
    assert ck["trainer"]["iteration"] == 2 * len(items)
    assert set(ck) >= {"generator", "discriminator", "g_optimizer", "d_optimizer", "g_scheduler", "d_scheduler",
                       "g_scaler", "d_scaler", "pool", "trainer"}
    assert len(ck["pool"]["images"]) == min(4, 2 * len(items))
    model = _ckpt(out / "model.pt")
    assert "model" not in model and any("parametrizations" in k for k in model)  # a plain state dict (model zoo)
    events = list((out / "logs").glob("events.out.tfevents*"))
    assert events
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "logs"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    tags = acc.Tags()
    assert any("g_loss" in t for t in tags["scalars"]) and "lr/g" in tags["scalars"]
    assert tags["images"], "image grid of mid slices logged"


def test_resume_continues_epochs_and_optimiser(trained, tiny_train_overrides):
    folder, items, out = trained
    before = _ckpt(out / "checkpoint_2.pt")
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(folder), output_dir=str(out), max_epochs=3,
               **tiny_train_overrides)
    after = _ckpt(out / "checkpoint_3.pt")
    assert after["trainer"]["iteration"] == 3 * len(items)
    step = lambda c: next(iter(c["g_optimizer"]["state"].values()))["step"]  # noqa: E731
    assert float(step(after)) == float(step(before)) + len(items)  # Adam state restored, not restarted
    assert after["g_scheduler"]["last_epoch"] == 3
    assert not (out / "checkpoint_4.pt").exists()


def test_inference_geometry_datalist_provenance(trained, tmp_path):
    folder, items, out = trained
    synth = tmp_path / "synth"
    run_bundle("mmgan_label2mri_3d", "inference", input=str(folder), ckpt_path=str(out / "model.pt"),
               output_dir=str(synth), device="cpu", gen_channels=[4, 8, 16, 32], roi_size=[16, 16, 16],
               overlap=0.25, perturb=True, seed=5)
    from monai.data import load_decathlon_datalist

    dl = load_decathlon_datalist(str(synth / "datalist.json"))
    assert len(dl) == len(items)
    for entry, src in zip(dl, items):
        img, lab, ref = nib.load(entry["image"]), nib.load(entry["label"]), nib.load(src["label"])
        assert img.shape == ref.shape == lab.shape
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
        np.testing.assert_allclose(lab.affine, ref.affine, atol=1e-5)
        data = np.asarray(img.dataobj)
        assert np.isfinite(data).all() and (data[np.asarray(lab.dataobj) == 0] == 0).all()
        prov = json.loads(Path(entry["image"].replace("_synth.nii.gz", "_synth.json")).read_text(encoding="utf-8"))
        assert prov["source_label_map"] == str(Path(src["label"]).resolve())
        assert len(prov["checkpoint_sha256"]) == 64 and prov["seed"] == 5 and prov["perturbation"]["perturbed"]
    assert not list(synth.glob(".staging*"))
    # never overwrite silently
    with pytest.raises(VolganConfigError, match="not empty"):
        run_bundle("mmgan_label2mri_3d", "inference", input=str(folder), ckpt_path=str(out / "model.pt"),
                   output_dir=str(synth), device="cpu", gen_channels=[4, 8, 16, 32], roi_size=[16, 16, 16])


def test_inference_bad_input_writes_nothing(trained, tmp_path):
    folder, items, out = trained
    bad = tmp_path / "labels"
    bad.mkdir()
    good_lab = nib.load(items[0]["label"])
    nib.save(good_lab, str(bad / "a_label.nii.gz"))
    lab = np.asarray(good_lab.dataobj).copy()
    lab[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(lab, good_lab.affine), str(bad / "b_label.nii.gz"))
    synth = tmp_path / "synth_bad"
    with pytest.raises(VolganDataError, match=r"b_label.nii.gz: label values \[9\]"):
        run_bundle("mmgan_label2mri_3d", "inference", input=str(bad), ckpt_path=str(out / "model.pt"),
                   output_dir=str(synth), device="cpu", gen_channels=[4, 8, 16, 32], roi_size=[16, 16, 16])
    assert not synth.exists() or not any(synth.iterdir())
    with pytest.raises(VolganDataError, match="checkpoint file does not exist"):
        run_bundle("mmgan_label2mri_3d", "inference", input=str(folder), ckpt_path=str(tmp_path / "none.pt"),
                   output_dir=str(tmp_path / "x"), device="cpu")


def test_tiled_synthesis_equals_a_direct_generator_pass(trained, tmp_path):
    """Synthesis in tiles smaller than the volume writes exactly G(one-hot) of one whole-volume pass (issue #19),
    with the network rebuilt from the checkpoint's sidecar (no network settings passed)."""
    folder, items, out = trained
    d = tmp_path / "whole"
    run_bundle("mmgan_label2mri_3d", "inference", input=items[0]["label"], ckpt_path=str(out / "model.pt"),
               output_dir=str(d), device="cpu", roi_size=[16, 16, 16], pseudo_intensity=False)
    written = np.asarray(nib.load(str(next(d.glob("*_synth.nii.gz")))).dataobj)
    from volgan.networks import SNUNetGenerator

    g = SNUNetGenerator(3, 5, 1, channels=(4, 8, 16, 32), norm_stats="running")
    g.load_state_dict(_ckpt(out / "model.pt"))
    g.eval()
    lab = torch.as_tensor(np.asarray(nib.load(items[0]["label"]).dataobj)).long()
    with torch.no_grad():
        direct = g(torch.nn.functional.one_hot(lab, 5).permute(3, 0, 1, 2)[None].float())[0, 0].numpy()
    np.testing.assert_allclose(written, direct, atol=1e-5)


def test_monai_bundle_command_line(tmp_path, tiny_dataset):
    """The documented command: python -m monai.bundle run ... with --amp false (a string) on the CPU."""
    folder, _ = tiny_dataset
    out = tmp_path / "cli_run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(BUNDLE / "configs" / "train.yaml"),
           "--bundle_root", str(BUNDLE), "--dataset_dir", str(folder), "--output_dir", str(out), "--max_epochs", "1",
           "--device", "cpu", "--amp", "false", "--patch_size", "[16,16,16]", "--gen_channels", "[4,8,16,32]",
           "--disc_channels", "[8,16,16]"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model.pt").is_file() and (out / "checkpoint_1.pt").is_file()


def test_cli_bad_input_one_line_nonzero(tmp_path, tiny_dataset):
    folder, items = tiny_dataset
    Path(items[1]["image"]).write_bytes(b"")
    r = subprocess.run([sys.executable, "-m", "volgan", "check-data", str(folder)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "case1_image.nii.gz: empty file" in lines[0], r.stderr


def test_evaluate_synthesis_quality_with_and_without_pool(trained, tmp_path, tiny_train_overrides):
    folder, items, out = trained
    nopool = tmp_path / "nopool"
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(folder), output_dir=str(nopool), max_epochs=1,
               pool_size=0, **tiny_train_overrides)
    assert _ckpt(nopool / "checkpoint_1.pt")["pool"]["images"] == []
    ev = tmp_path / "eval"
    # evaluate.yaml is an override of train.yaml: the training run's overrides, the run folder, a test set
    run_bundle("mmgan_label2mri_3d", "evaluate", dataset_dir=str(folder), output_dir=str(out), eval_dir=str(ev),
               ckpt_path_nopool=str(nopool / "model.pt"), seg_iterations=2, seg_channels=[4, 8, 16],
               seg_patch_size=[16, 16, 16], roi_size=[24, 24, 24], val_fraction=0.34, **tiny_train_overrides)
    report = json.loads((ev / "results.json").read_text(encoding="utf-8"))
    res = {k: v[0] for k, v in report["runs"].items()}
    assert set(res) == {"real held-out images (reference)", "synthetic, with image pool", "synthetic, without image pool"}
    for r in res.values():
        assert r["n_test"] == 1 and {"WT", "TC", "ET(4)"} <= set(r["rows"][0])
    assert (ev / "results.csv").read_text(encoding="utf-8").count("\n") == 4 and (ev / "segmentor.pt").is_file()
    syn = res["synthetic, with image pool"]["rows"][0]  # paired reference: the real image of the same label map
    assert -1.0 <= syn["SSIM"] <= 1.0 and math.isfinite(syn["PSNR (dB)"])
    assert res["real held-out images (reference)"]["rows"][0]["SSIM"] is None  # NaN is written as null
    from volgan.evaluation.scores import paired_similarity

    same = paired_similarity(items[0]["image"], items[0]["image"], items[0]["label"])
    assert same["SSIM"] == pytest.approx(1.0, abs=1e-4)


def test_validation_keeps_the_best_generator_by_ssim(tmp_path, tiny_dataset, tiny_train_overrides):
    """With val_dataset_dir: SSIM of whole synthesised held-out volumes each epoch; model_best.pt is the generator
    of the best epoch (re-scored here), beside the last-K checkpoints."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    folder, items = tiny_dataset
    out = tmp_path / "run"
    scores: list[float] = []
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.yaml"))
    parser.update(dict(bundle_root=str(BUNDLE), dataset_dir=str(folder), output_dir=str(out), max_epochs=3,
                       val_dataset_dir=str(folder), val_interval=1, n_saved=2, **tiny_train_overrides))
    evaluator = parser.get_parsed_content("validate#evaluator")

    evaluator.add_event_handler(Events.COMPLETED, lambda e: scores.append(float(e.state.metrics["val_ssim"])))
    for expr in ("initialize", "run"):
        parser.get_parsed_content(expr)
    assert len(scores) == 3 and all(-1 <= s <= 1 for s in scores)
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_2.pt", "checkpoint_3.pt"]
    best = _ckpt(out / "model_best.pt")
    net = parser.get_parsed_content("network")
    net.load_state_dict(best)
    evaluator.run()
    assert scores[-1] == pytest.approx(max(scores[:3]), abs=1e-5)


def test_gan_stops_when_held_out_ssim_stops_improving(tmp_path, tiny_dataset, tiny_train_overrides):
    """#20 item 4, a stated criterion: with val_patience 1 training ends at the first validation whose SSIM is no
    better than the best so far (or at max_epochs); every validation is a row of OUT/val_curve.csv, and the
    patience state is in the checkpoint."""
    import csv

    folder, _ = tiny_dataset
    out = tmp_path / "run"
    wf = run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(folder), output_dir=str(out), max_epochs=6,
                    val_dataset_dir=str(folder), val_interval=1, val_patience=1, lr_g=5e-2, **tiny_train_overrides)
    rows = list(csv.DictReader(open(out / "val_curve.csv", encoding="utf-8")))
    scores = [float(r["val_ssim"]) for r in rows]
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    stop = next((i + 1 for i in range(1, len(scores)) if scores[i] <= max(scores[:i])), len(scores))
    assert len(scores) == stop and wf.parser.get_parsed_content("train#gan_trainer").state.epoch == stop
    ck = torch.load(sorted(out.glob("checkpoint_*.pt"))[-1], weights_only=True)
    assert set(ck["early_stop"]) == {"counter", "best_score", "stopped"} and ck["early_stop"]["best_score"] == \
        pytest.approx(max(scores), abs=1e-6)
    assert ck["early_stop"]["stopped"] == (stop < 6)


def test_tissue_classes_as_a_richer_condition(tmp_path, tiny_train_overrides):
    """#20 item 5: the brain outside the tumour split into CSF 5 / GM 6 / WM 7 (multi-Otsu of the real T1, darkest
    to brightest), the same images as the brain-only sample; MM-GAN trains and synthesises with that condition
    (label_values without 3: no brain label required)."""
    from volgan.data import TISSUE_LABELS, load_datalist, make_sample_cases, tissue_classes
    from volgan.synthesis import synthesize

    brain = load_datalist(make_sample_cases(tmp_path / "brain", 1, subjects=("robex",)))
    tissue = load_datalist(make_sample_cases(tmp_path / "tissue", 1, subjects=("robex",), tissue=True))
    img_b, lab_b = (np.asarray(nib.load(brain[0][k]).dataobj) for k in ("image", "label"))
    img_t, lab_t = (np.asarray(nib.load(tissue[0][k]).dataobj) for k in ("image", "label"))
    assert np.array_equal(img_b, img_t)  # the same images, only the condition differs
    assert set(np.unique(lab_t)) == {0, 1, 2, 4, 5, 6, 7} and np.array_equal(lab_t == 0, lab_b == 0)
    assert np.array_equal(np.isin(lab_t, [1, 2, 4]), np.isin(lab_b, [1, 2, 4]))  # tumour labels unchanged
    means = [img_t[lab_t == v].mean() for v in sorted(TISSUE_LABELS)]
    assert means[0] < means[1] < means[2]  # T1: CSF < GM < WM
    toy = np.repeat([1.0, 10.0, 20.0], 20)[None]
    assert np.array_equal(tissue_classes(toy, np.ones(toy.shape, bool))[0], np.repeat([5, 6, 7], 20))
    out = tmp_path / "run"
    values = [0, 1, 2, 4, 5, 6, 7]
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=tissue, output_dir=str(out), max_epochs=1,
               label_values=values, **tiny_train_overrides)
    syn = synthesize([{"label": tissue[0]["label"]}], out / "model.pt", tmp_path / "syn", device="cpu",
                     roi_size=[32, 32, 32])
    made = np.asarray(nib.load(load_datalist(syn)[0]["image"]).dataobj)
    assert made.shape[:3] == lab_t.shape and np.isfinite(made).all()
