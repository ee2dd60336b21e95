"""``volgan export-nnunet``: real + synthetic (image, label) pairs as an nnU-Net v2 raw dataset (``volgan.export``).

Tiny 16^3 cases; the synthetic folder is written by the real ``SynthesisWriter`` (as ``volgan synthesize`` does).
The last test runs nnU-Net's own ``verify_dataset_integrity`` when ``nnunetv2`` is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import warnings
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import tiny_case, tools_venv_python, write_pair
from volgan.apps.cli import main
from volgan.errors import VolganConfigError, VolganDataError
from volgan.apps.nnunet import export_nnunet, parse_labels

SHAPE = (16, 16, 16)
# an oblique grid with an offset: geometry must come through exactly, not just a diagonal affine
_c, _s = np.cos(0.3), np.sin(0.3)
AFF = np.array([[1.5 * _c, -1.5 * _s, 0, -20.25], [1.5 * _s, 1.5 * _c, 0, 11.5], [0, 0, 2.5, 3.75], [0, 0, 0, 1]])


def _real(folder: Path, n: int = 3, seed: int = 0, brain: int = 3) -> list[dict]:
    """``n`` tiny (image, label) pairs on the oblique grid; labels 0, 1, 2, 4 and ``brain``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    items = []
    for i in range(n):
        img, lab = tiny_case(rng, SHAPE)
        items.append(write_pair(folder, f"case{i}", img, np.where(lab == 3, brain, lab), affine=AFF))
    return items


def _synthesize(real: list[dict], out: Path) -> Path:
    """The synthesis output folder of ``volgan synthesize``: ``SynthesisWriter`` fed one fake evaluator iteration
    per real label map (generated image = a scaled copy of the real one)."""
    from monai.transforms import LoadImage

    from volgan.synthesis import SynthesisWriter

    load = LoadImage(image_only=True, ensure_channel_first=True)
    writer = SynthesisWriter(out, seed=0)
    for it in real:
        lab, img = load(it["label"]), load(it["image"])
        state = SimpleNamespace(batch=[{"image": lab, "label": lab}], output=[{"pred": img * 0.5}])
        writer._write(SimpleNamespace(state=state))
    writer.commit()
    return out


def _read(path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_real_and_synthetic_dataset(tmp_path):
    real = _real(tmp_path / "real")
    syn = _synthesize(real, tmp_path / "synth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing noisy on the way (nibabel/MONAI warnings would reach the CLI)
        ds = export_nnunet(tmp_path / "real", tmp_path / "raw", 501, "BrainSynth", synthetic=syn)
    assert ds == tmp_path / "raw" / "Dataset501_BrainSynth"
    assert _names(tmp_path / "raw") == ["Dataset501_BrainSynth"]  # no staging folder left
    assert _names(ds) == ["dataset.json", "imagesTr", "labelsTr", "splits_final.json"]
    cases = [f"real_case{i}" for i in range(3)] + [f"syn_case{i}" for i in range(3)]
    assert _names(ds / "imagesTr") == [f"{c}_0000.nii.gz" for c in cases]
    assert _names(ds / "labelsTr") == [f"{c}.nii.gz" for c in cases]

    meta = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    found = sorted({int(v) for it in real for v in np.unique(_read(it["label"])[0])})
    assert found == [0, 1, 2, 3, 4]
    assert meta["channel_names"] == {"0": "image"}
    assert meta["labels"] == {"background": 0, "label_1": 1, "label_2": 2, "label_3": 3, "label_4": 4}
    assert meta["numTraining"] == 6 and meta["file_ending"] == ".nii.gz"
    v = meta["volgan"]
    assert v["label_mapping"] == {str(i): i for i in range(5)}
    assert (v["num_real"], v["num_synthetic"], v["num_test"]) == (3, 3, 0)
    assert sorted(v["cases"]) == cases
    assert v["cases"]["syn_case1"]["made_from"] == "real_case1"
    assert v["cases"]["real_case2"] == {"kind": "real", "image": real[2]["image"], "label": real[2]["label"]}

    for i, it in enumerate(real):  # geometry and arrays come through exactly
        img, aff = _read(it["image"])
        out_img, out_aff = _read(ds / "imagesTr" / f"real_case{i}_0000.nii.gz")
        lab, _ = _read(it["label"])
        out_lab, lab_aff = _read(ds / "labelsTr" / f"real_case{i}.nii.gz")
        assert np.array_equal(out_img, img) and out_img.dtype == np.float32
        assert np.array_equal(out_lab, lab) and out_lab.dtype == np.uint8
        assert np.array_equal(out_aff, aff) and np.array_equal(lab_aff, aff)
        syn_img, syn_aff = _read(ds / "imagesTr" / f"syn_case{i}_0000.nii.gz")
        assert np.array_equal(syn_img, _read(syn / f"case{i}_synth.nii.gz")[0]) and np.allclose(syn_aff, aff)
        assert np.array_equal(_read(ds / "labelsTr" / f"syn_case{i}.nii.gz")[0], lab)

    # cross-validation on real cases only; never train on a synthetic case made from a validation case
    splits = json.loads((ds / "splits_final.json").read_text(encoding="utf-8"))
    assert len(splits) == 3
    assert sorted(c for s in splits for c in s["val"]) == cases[:3]
    for s in splits:
        (val,) = s["val"]
        assert sorted(s["train"]) == sorted(c for c in cases if c != val and c != "syn_" + val[len("real_"):])


def test_non_consecutive_labels_are_remapped(tmp_path):
    """BraTS-style 0, 1, 2, 4 become 0, 1, 2, 3; names come from --labels; the mapping is in dataset.json."""
    rng = np.random.RandomState(1)
    real = tmp_path / "real"
    real.mkdir()
    items = []
    for i in range(2):
        img, lab = tiny_case(rng, SHAPE)
        lab[lab == 3] = 0  # no "brain" label: 0, 1, 2, 4
        lab[4:6, 4:6, 4:6] = 1
        items.append(write_pair(real, f"c{i}", img, lab, affine=AFF))
    spec = ["background=0", "necrosis=1", "oedema=2", "enhancing=4"]
    ds = export_nnunet(real, tmp_path / "raw", 7, "Brats", labels=spec)
    meta = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert meta["labels"] == {"background": 0, "necrosis": 1, "oedema": 2, "enhancing": 3}
    assert meta["volgan"]["label_mapping"] == {"0": 0, "1": 1, "2": 2, "4": 3}
    assert ds.name == "Dataset007_Brats" and meta["numTraining"] == 2
    for i, it in enumerate(items):
        lab = _read(it["label"])[0]
        out = _read(ds / "labelsTr" / f"real_c{i}.nii.gz")[0]
        assert np.array_equal(out, np.where(lab == 4, 3, lab))
        assert sorted(np.unique(out)) == [0, 1, 2, 3]
    # without names: the values found, each named after its input value
    ds = export_nnunet(real, tmp_path / "raw2", 8, "Brats")
    meta = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert meta["labels"] == {"background": 0, "label_1": 1, "label_2": 2, "label_4": 3}


def test_multichannel_decathlon_json_and_test_set(tmp_path):
    """4D images (channels last) become _0000/_0001; channel names and label names come from the decathlon JSON;
    held-out cases go to imagesTs/labelsTs."""
    from volgan.data import write_datalist

    rng = np.random.RandomState(2)
    d = tmp_path / "msd"
    d.mkdir()
    items = []
    for i in range(3):
        img, lab = tiny_case(rng, SHAPE)
        four_d = np.stack([img, img * 2 + 1], axis=-1).astype(np.float32)
        nib.save(nib.Nifti1Image(four_d, AFF), str(d / f"BRATS_{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(lab.astype(np.uint8), AFF), str(d / f"BRATS_{i:03d}_seg.nii.gz"))
        items.append({"image": f"BRATS_{i:03d}.nii.gz", "label": f"BRATS_{i:03d}_seg.nii.gz"})
    labels = {"0": "background", "1": "necrosis", "2": "oedema", "3": "brain", "4": "enhancing"}
    dl = write_datalist(d / "dataset.json", [{k: str(d / v) for k, v in it.items()} for it in items[:2]],
                        modality={"0": "T1", "1": "T2"}, labels=labels)
    test = write_datalist(d / "test.json", [{k: str(d / v) for k, v in items[2].items()}])
    ds = export_nnunet(dl, tmp_path / "raw", 12, "Msd", test=test)
    meta = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert meta["channel_names"] == {"0": "T1", "1": "T2"}
    assert meta["labels"] == {"background": 0, "necrosis": 1, "oedema": 2, "brain": 3, "enhancing": 4}
    assert _names(ds / "imagesTr") == [f"real_BRATS_{i:03d}_{c:04d}.nii.gz" for i in range(2) for c in range(2)]
    assert _names(ds / "imagesTs") == ["real_BRATS_002_0000.nii.gz", "real_BRATS_002_0001.nii.gz"]
    assert _names(ds / "labelsTs") == ["real_BRATS_002.nii.gz"]
    assert meta["volgan"]["num_test"] == 1 and meta["numTraining"] == 2
    four_d = _read(d / "BRATS_000.nii.gz")[0]
    for c in range(2):
        out, aff = _read(ds / "imagesTr" / f"real_BRATS_000_{c:04d}.nii.gz")
        assert out.shape == SHAPE and np.array_equal(out, four_d[..., c])
        assert np.array_equal(aff, AFF.astype(np.float32))
    assert len(json.loads((ds / "splits_final.json").read_text(encoding="utf-8"))) == 2


def test_overwrite_and_dataset_id_clash(tmp_path):
    _real(tmp_path / "real", n=2)
    ds = export_nnunet(tmp_path / "real", tmp_path / "raw", 501, "A")
    (ds / "imagesTr" / "stale_0000.nii.gz").write_bytes(b"old")
    with pytest.raises(VolganConfigError, match=r"Dataset501_A is not empty; pass --overwrite"):
        export_nnunet(tmp_path / "real", tmp_path / "raw", 501, "A")
    assert (ds / "imagesTr" / "stale_0000.nii.gz").exists()  # untouched
    export_nnunet(tmp_path / "real", tmp_path / "raw", 501, "A", overwrite=True)
    assert not (ds / "imagesTr" / "stale_0000.nii.gz").exists()  # replaced as a whole
    assert _names(tmp_path / "raw") == ["Dataset501_A"]
    with pytest.raises(VolganConfigError, match=r"already holds Dataset501_A with dataset id 501"):
        export_nnunet(tmp_path / "real", tmp_path / "raw", 501, "B", overwrite=True)
    bad_ids = ((0, "A", "1..999"), (1000, "A", "1..999"), ("x", "A", "integer"), (5, "my data", "no spaces"))
    for did, name, msg in bad_ids:
        with pytest.raises(VolganConfigError, match=msg):
            export_nnunet(tmp_path / "real", tmp_path / "raw", did, name)


def _expect_error(tmp_path, exc, path, problem, **kw):
    kw.setdefault("real", tmp_path / "real")
    with pytest.raises(exc) as e:
        export_nnunet(out_dir=tmp_path / "raw", dataset_id=9, name="Bad", **kw)
    if path is not None:
        assert e.value.path == str(path)
    assert re.search(problem, e.value.problem if path is not None else str(e.value)), str(e.value)
    raw = tmp_path / "raw"
    assert not raw.exists() or _names(raw) == [], _names(raw)  # nothing written, no staging folder


def test_bad_inputs_name_the_file_and_write_nothing(tmp_path):
    real = _real(tmp_path / "real", n=2)
    # missing file in a datalist
    dl = tmp_path / "dl.json"
    dl.write_text(json.dumps({"training": [{"image": "nope_image.nii.gz", "label": real[0]["label"]}]}),
                  encoding="utf-8")
    _expect_error(tmp_path, VolganDataError, tmp_path / "nope_image.nii.gz", r"^does not exist", real=dl)
    # a synthetic label whose shape differs from its image
    bad = tmp_path / "bad"
    bad.mkdir()
    img, lab = tiny_case(np.random.RandomState(3), SHAPE)
    write_pair(bad, "c0", img, lab[:, :, :12], affine=AFF)
    _expect_error(tmp_path, VolganDataError, bad / "c0_label.nii.gz", r"^shape \(16, 16, 12\) does not match image",
                  synthetic=bad)
    # a label value outside the declared labels
    _expect_error(tmp_path, VolganDataError, Path(real[0]["label"]), r"label values \[4\] not in the configured set",
                  labels=["background", "necrosis", "oedema", "brain"])
    # synthetic images with another number of channels than the real ones
    four = tmp_path / "four"
    four.mkdir()
    nib.save(nib.Nifti1Image(np.stack([img, img], -1).astype(np.float32), AFF), str(four / "c0_image.nii.gz"))
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), AFF), str(four / "c0_label.nii.gz"))
    _expect_error(tmp_path, VolganDataError, four / "c0_image.nii.gz", r"with one channel, got 4D", synthetic=four)
    # a synthesis folder without labels, an unsupported file ending, inconsistent channel names
    nolab = tmp_path / "nolab"
    nolab.mkdir()
    (nolab / "datalist.json").write_text(json.dumps({"training": [{"image": real[0]["image"]}]}), encoding="utf-8")
    _expect_error(tmp_path, VolganDataError, nolab / "datalist.json", r"^entry 0 has no 'label'", synthetic=nolab)
    _expect_error(tmp_path, VolganConfigError, None, r"file_ending must be one of", file_ending=".nrrd")
    _expect_error(tmp_path, VolganDataError, Path(real[0]["image"]),
                  r"^expected 2 channels on the last axis, got a single-channel 3D volume", channel_names=["T1", "T2"])


def test_a_failure_while_writing_leaves_the_old_dataset(tmp_path, monkeypatch):
    import volgan.apps.nnunet as ex

    _real(tmp_path / "real", n=2)
    ds = export_nnunet(tmp_path / "real", tmp_path / "raw", 3, "Keep")
    before = {p.relative_to(ds): p.read_bytes() for p in ds.rglob("*") if p.is_file()}
    calls = []
    real_write = ex._write_case

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(*a, **k)

    monkeypatch.setattr(ex, "_write_case", failing)
    with pytest.raises(OSError, match="disk full"):
        export_nnunet(tmp_path / "real", tmp_path / "raw", 3, "Keep", overwrite=True)
    assert _names(tmp_path / "raw") == ["Dataset003_Keep"]
    assert {p.relative_to(ds): p.read_bytes() for p in ds.rglob("*") if p.is_file()} == before
    calls.clear()
    with pytest.raises(OSError, match="disk full"):
        export_nnunet(tmp_path / "real", tmp_path / "raw", 4, "New")
    assert _names(tmp_path / "raw") == ["Dataset003_Keep"]


def test_parse_labels():
    assert parse_labels(None) is None
    assert parse_labels(["bg", "tumour"]) == {"background": 0, "tumour": 1}
    assert parse_labels(["tumour=2", "background=0"]) == {"background": 0, "tumour": 2}
    assert parse_labels({"0": "background", "4": "enhancing"}) == {"background": 0, "enhancing": 4}
    assert parse_labels({"liver": 1}) == {"background": 0, "liver": 1}
    for bad, msg in ((["a=1", "b"], "NAME=VALUE or none"), (["a=x"], "integer >= 0"), (["a=1", "b=1"], "two names"),
                     (["background=2"], "must be value 0"), (["a=1", "a=2"], "given twice"), (3, "mapping")):
        with pytest.raises(VolganConfigError, match=msg):
            parse_labels(bad)


def _cli(argv, capsys):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, [ln for ln in out.err.splitlines() if ln.strip()]


def test_cli(tmp_path, capsys, monkeypatch):
    real = _real(tmp_path / "real", n=2)
    syn = _synthesize(real, tmp_path / "synth")
    argv = ["export-nnunet", "--real", tmp_path / "real", "--synthetic", syn, "--output-dir", tmp_path / "raw",
            "--dataset-id", "501", "--name", "BrainSynth", "--labels", "background=0", "a=1", "b=2", "brain=3",
            "enh=4", "--channel-names", "T1"]
    rc, out, err = _cli(argv, capsys)
    ds = tmp_path / "raw" / "Dataset501_BrainSynth"
    assert (rc, out.strip(), err) == (0, str(ds), [])
    meta = json.loads((ds / "dataset.json").read_text(encoding="utf-8"))
    assert meta["channel_names"] == {"0": "T1"} and meta["numTraining"] == 4 and meta["labels"]["enh"] == 4
    # a second run refuses the existing dataset: exit status 2, one line
    rc, out, err = _cli(argv, capsys)
    assert rc == 2 and out == "" and len(err) == 1
    assert err[0] == f"volgan: error: output_dir {ds} is not empty; pass --overwrite true to write into it"
    rc, out, err = _cli(argv + ["--overwrite"], capsys)
    assert rc == 0 and err == []
    # a missing real dataset; then no output folder at all
    rc, out, err = _cli(["export-nnunet", "--real", tmp_path / "none", "--output-dir", tmp_path / "raw2",
                         "--dataset-id", "2", "--name", "X"], capsys)
    assert rc == 2 and err == [f"volgan: error: {tmp_path / 'none'}: datalist does not exist"]
    monkeypatch.delenv("nnUNet_raw", raising=False)
    rc, _, err = _cli(["export-nnunet", "--real", tmp_path / "real", "--dataset-id", "2", "--name", "X"], capsys)
    assert rc == 2 and err == ["volgan: error: no output folder: pass --output-dir or set nnUNet_raw"]
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "env_raw"))
    rc, out, err = _cli(["export-nnunet", "--real", tmp_path / "real", "--dataset-id", "2", "--name", "X"], capsys)
    assert rc == 0 and out.strip() == str(tmp_path / "env_raw" / "Dataset002_X")


def test_nnunet_accepts_the_dataset(tmp_path, monkeypatch, capfd):
    """nnU-Net v2's own ``verify_dataset_integrity`` on an exported real + synthetic dataset with remapped labels:
    no error, no warning (geometry, labels, channels, counts)."""
    for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, str(tmp_path / k))
    real = _real(tmp_path / "real", n=2, brain=5)  # 0, 1, 2, 4, 5: mapped to 0..4
    syn = _synthesize(real, tmp_path / "synth")
    ds = export_nnunet(tmp_path / "real", tmp_path / "nnUNet_raw", 990, "VolganCheck", synthetic=syn,
                       labels=["background=0", "necrosis=1", "oedema=2", "enhancing=4", "brain=5"])
    code = ("from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity; "
            f"verify_dataset_integrity({str(ds)!r}, num_processes=1)")
    if importlib.util.find_spec("nnunetv2") is not None:
        capfd.readouterr()
        exec(code)
        out = capfd.readouterr().out
    else:  # nnU-Net lives in the tools venv (tools/monailabel_venv.sh): it would replace the CPU torch here
        py = tools_venv_python("nnunetv2")
        res = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=600, env=dict(os.environ))
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
        out = res.stdout
    assert "verify_dataset_integrity Done" in out
    assert not re.search(r"warning|error", out.replace("If you didn't see any error messages", ""), re.I), out
