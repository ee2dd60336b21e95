"""Shared fixtures: tiny real-anatomy cases built from the embedded sample (no ../shared needed)."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

os.environ.setdefault("CI", "1")  # progress bars off in tests
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

BUNDLES = Path(__file__).resolve().parent.parent / "bundles"


def tools_venv_python(modules: str) -> str:
    """Python of the separate MONAI Label (+ nnU-Net) environment built by ``tools/monailabel_venv.sh`` that can
    import ``modules``; skips the test when there is none, fails it under CI (``VOLGAN_REQUIRE_MONAILABEL=1``)."""
    import subprocess

    py = os.environ.get("VOLGAN_MONAILABEL_PYTHON") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "volgan" / "monailabel-0.8.5" / "bin" / "python")
    ok = Path(py).is_file() and subprocess.run([py, "-c", f"import {modules}"], capture_output=True,
                                               timeout=300).returncode == 0
    if not ok:
        msg = f"no environment at {py} that imports {modules}: build it with tools/monailabel_venv.sh (CI does)"
        if os.environ.get("VOLGAN_REQUIRE_MONAILABEL") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return py


def write_pair(folder: Path, case: str, image: np.ndarray, label: np.ndarray, affine=None, img_name=None, lab_name=None):
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    ip = folder / (img_name or f"{case}_image.nii.gz")
    lp = folder / (lab_name or f"{case}_label.nii.gz")
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(ip))
    nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(lp))
    return {"image": str(ip), "label": str(lp)}


def tiny_case(rng: np.random.RandomState, shape=(24, 24, 24)):
    """A small brain-like volume: ellipsoid 'brain' (label 3) with a lesion (1/2/4) and matching intensities."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    brain = (grid**2).sum(0) < 0.8
    c = rng.uniform(-0.25, 0.25, 3)
    d = np.sqrt(((grid - c.reshape(3, 1, 1, 1)) ** 2).sum(0))
    lab = np.where(brain, 3, 0)
    lab[(d < 0.35) & brain] = 2
    lab[(d < 0.22) & brain] = 4
    lab[(d < 0.12) & brain] = 1
    img = np.where(brain, 500 + 100 * rng.standard_normal(shape), 0.0)
    img[lab == 4] += 400
    img[lab == 1] -= 300
    return np.clip(img, 1, None) * brain, lab


def write_cases(folder: Path, n: int, depth: int = 4, seed: int = 0) -> Path:
    """``n`` tiny (24, 24, depth) cases c0, c1, ... in a new ``folder`` (the 2D bundles' slice sources)."""
    folder.mkdir()
    rng = np.random.RandomState(seed)
    for i in range(n):
        write_pair(folder, f"c{i}", *tiny_case(rng, (24, 24, depth)))
    return folder


@pytest.fixture
def tiny_dataset(tmp_path: Path):
    """Folder with 3 tiny (image, label) pairs named <case>_image / <case>_label."""
    rng = np.random.RandomState(0)
    folder = tmp_path / "data"
    folder.mkdir()
    items = [write_pair(folder, f"case{i}", *tiny_case(rng)) for i in range(3)]
    return folder, items


@pytest.fixture
def tiny_train_overrides():
    """Bundle overrides that make MM-GAN training take seconds on a CPU."""
    return dict(device="cpu", patch_size=[16, 16, 16], gen_channels=[4, 8, 16, 32], disc_channels=[8, 16, 16],
                log_interval=1, image_interval=1, amp=False)


def torchrun_bundle(bundle: str, port: int, **overrides) -> None:
    """Run ``bundle``'s train.yaml + multi_gpu_train.yaml under ``torchrun --nproc_per_node 2`` on the CPU (gloo);
    ``overrides`` become ``--id=value`` (lists as JSON). Skips when torchrun is missing; fails with its stderr."""
    import json
    import shutil
    import subprocess

    if shutil.which("torchrun") is None:
        pytest.skip("torchrun not on PATH")
    cfg = BUNDLES / bundle / "configs"
    args = [f"--{k}=" + (json.dumps(v).replace(" ", "") if isinstance(v, (list, dict)) else str(v))
            for k, v in overrides.items()]
    cmd = ["torchrun", "--nproc_per_node", "2", "--master_port", str(port), "-m", "monai.bundle", "run",
           "--config_file", f"['{cfg / 'train.yaml'}','{cfg / 'multi_gpu_train.yaml'}']", "--bundle_root",
           str(cfg.parent), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
