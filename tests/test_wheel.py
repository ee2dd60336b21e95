"""Installed, not cloned (issue #22): the wheel carries the bundles, the MONAI Label app template and the sample data;
installed into a fresh venv it runs the demo and a bundle from its installed path, from a folder without a checkout.

The venv sees the system site-packages for the dependencies (torch, monai, ...: installing them again would take
minutes and the network); volgan itself comes only from the wheel (its folder precedes them on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp / "dist").glob("volgan-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")], check=True, timeout=120)
    py = tmp / "venv" / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    work = tmp / "elsewhere"  # no checkout here
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VOLGAN_BUNDLES", "PYTHONPATH")}
    return wheel, py, work, env


def test_the_wheel_carries_bundles_app_and_sample(installed):
    wheel, *_ = installed
    names = zipfile.ZipFile(wheel).namelist()
    for bundle in ("mmgan_label2mri_3d", "cycleshape_ct_mri_3d", "gan_pretrain_seg_2d", "wgan_pairs_seg_2d",
                   "adversarial_unet_aug_2d"):
        for f in ("configs/metadata.json", "configs/train.yaml", "configs/inference.yaml", "docs/README.md"):
            assert f"volgan/bundles/{bundle}/{f}" in names, (bundle, f)
    assert "volgan/apps/monailabel/template/main.py" in names
    assert sum(n.startswith("volgan/data/sample/") and n.endswith(".nii.gz") for n in names) == 6


def test_installed_bundle_runs_from_its_path_and_exports(installed, tmp_path):
    _, py, work, env = installed
    run = {"cwd": str(work), "env": env, "capture_output": True, "text": True, "encoding": "utf-8", "errors": "replace", "timeout": 600}
    r = subprocess.run([str(py), "-m", "volgan", "bundle", "path", "mmgan_label2mri_3d"], **run)
    assert r.returncode == 0, r.stderr
    path = Path(r.stdout.strip())
    assert "site-packages" in str(path) and str(ROOT) not in str(path) and (path / "configs" / "train.yaml").is_file()
    out = tmp_path / "run"
    tiny = ["--device", "cpu", "--max_epochs", "1", "--patch_size", "[16,16,16]", "--gen_channels", "[4,8,16,32]",
            "--disc_channels", "[8,16,16]", "--amp", "false"]
    r = subprocess.run([str(py), "-m", "monai.bundle", "run", "--config_file", str(path / "configs" / "train.yaml"),
                        "--bundle_root", str(path), "--dataset_dir", "sample", "--output_dir", str(out), *tiny], **run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "model.pt").is_file() and json.loads((out / "model.json").read_text(encoding="utf-8"))["network"]
    cases = tmp_path / "cases"
    r = subprocess.run([str(py), "-c", f"from volgan.data import make_sample_cases; make_sample_cases({str(cases)!r}, 1, "
                        "subjects=('mni152',))"], **run)
    assert r.returncode == 0, r.stderr
    synth = tmp_path / "synth"
    r = subprocess.run([str(py), "-m", "volgan", "synthesize", str(next(cases.glob("*_label.nii.gz"))),
                        "--ckpt-path", str(out / "model.pt"), "--output-dir", str(synth), "--device", "cpu"], **run)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(json.loads((synth / "datalist.json").read_text(encoding="utf-8"))["training"]) == 1
    exported = tmp_path / "zoo"
    r = subprocess.run([str(py), "-m", "volgan", "bundle", "export", "mmgan_label2mri_3d", "--output-dir",
                        str(exported), "--ckpt-path", str(out / "model.pt")], **run)
    assert r.returncode == 0, r.stderr
    b = exported / "mmgan_label2mri_3d"
    assert {"configs", "docs", "LICENSE", "models"} <= {p.name for p in b.iterdir()}
    import torch

    state = torch.load(b / "models" / "model.pt", weights_only=True)
    ref = torch.load(out / "model.pt", weights_only=True)
    assert "model" not in state and set(state) == set(ref) and all(torch.equal(state[k], ref[k]) for k in ref)
    assert (b / "models" / "model.json").is_file() and (b / "docs" / "data_license.txt").is_file()
    r = subprocess.run([str(py), "-m", "volgan", "bundle", "export", "mmgan_label2mri_3d", "--output-dir",
                        str(exported)], **run)
    assert r.returncode == 2 and "exists" in r.stderr  # never replaced silently


def test_installed_demo_quick(installed, tmp_path):
    _, py, work, env = installed
    r = subprocess.run([str(py), "-m", "volgan", "demo", "--quick", "--output-dir", str(tmp_path / "demo")],
                       cwd=str(work), env=env, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Difference to **real only**" in r.stdout and (tmp_path / "demo" / "figure.png").is_file()


LOAD_APP = """
import importlib.util, json, sys
app_dir, studies = sys.argv[1], sys.argv[2]
spec = importlib.util.spec_from_file_location("volgan_label_app", app_dir + "/main.py")
main = importlib.util.module_from_spec(spec)
spec.loader.exec_module(main)
import volgan
info = main.VolganApp(app_dir, studies, {"models": "all", "zoo_source": "local", "sam2": "false"}).info()
print(json.dumps({"volgan": volgan.__file__, "models": sorted(info["models"]), "trainers": sorted(info["trainers"])}))
"""


def test_installed_label_app_is_served_by_monai_label(installed, tmp_path):
    """`volgan label-app` of the installed wheel writes the app from the wheel's template and bundles; MONAI Label (its
    own venv, numpy < 2) loads it with volgan imported from the wheel, not the checkout, and offers both bundles."""
    from tests.conftest import tools_venv_python
    from tests.test_monailabel import _random_weights

    ml_python = tools_venv_python("monailabel")
    _, py, work, env = installed
    weights = {b: _random_weights(b, tmp_path / f"{b}.pt") for b in ("wgan_pairs_seg_2d", "mmgan_label2mri_3d")}
    app = tmp_path / "app"
    r = subprocess.run([str(py), "-m", "volgan", "label-app", str(app),
                        *[a for b, w in weights.items() for a in ("--bundle", f"{b}={w}")]],
                       cwd=str(work), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    site = next(Path(py).parent.parent.glob("lib/python*/site-packages"))
    only = tmp_path / "only"  # volgan of the wheel alone on the path (the venv's pip/setuptools left out)
    only.mkdir()
    (only / "volgan").symlink_to(site / "volgan")
    studies, home = tmp_path / "studies", tmp_path / "home"
    studies.mkdir()
    home.mkdir()
    ml_env = {**env, "PYTHONPATH": str(only), "HOME": str(home), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([ml_python, "-c", LOAD_APP, str(app), str(studies)], cwd=str(work), env=ml_env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["volgan"].startswith(str(only)) and str(ROOT) not in info["volgan"]
    assert info["models"] == ["mmgan_label2mri_3d", "wgan_pairs_seg_2d"] and info["trainers"] == ["wgan_pairs_seg_2d"]
