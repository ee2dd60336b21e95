#!/usr/bin/env bash
# Build (or reuse) a separate virtual environment for MONAI Label 0.8.5 and nnU-Net v2 (the tools volgan hands its
# data to) and install this checkout of volgan in it; print the environment's python. MONAI Label pins numpy<2
# (through pydicom-seg), so it must not share volgan's main environment. Pins as measured in ../shared/notes/monai-label.md: pydicom 3 breaks pydicom-seg 0.4.1, and
# torchvision (imported by monailabel) needs the torch it was built for. The venv is cached between runs
# (VOLGAN_MONAILABEL_VENV, default ~/.cache/volgan/monailabel-0.8.5): the first build takes 3-7 minutes.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${VOLGAN_MONAILABEL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/volgan/monailabel-0.8.5}"
PINS=(torch==2.14.1 torchvision==0.29.1 monai==1.6.1 monailabel==0.8.5 pydicom==2.4.4 pynetdicom==2.0.2
      "dicomweb-client[gcp]==0.59.1" nnunetv2==2.8.1)
# nnU-Net is here, not in volgan's environment: pip would replace the CPU torch there with a CUDA build, and the
# only torchvision on this machine's index is a CUDA build that does not import beside a CPU torch.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
if ! "$VENV/bin/python" -c "import monailabel, torchvision" >/dev/null 2>&1; then  # (re)build from scratch
  echo "building the MONAI Label environment in $VENV (3-7 minutes)" >&2
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  python3 -m venv "$VENV"
  SAM2_BUILD_CUDA=0 "$VENV/bin/python" -m pip install -qq "${PINS[@]}" >&2
fi
# always (re)point the venv at this checkout; volgan's own requirements resolved under MONAI Label's numpy<2
"$VENV/bin/python" -m pip install -qq -e "$ROOT" "numpy<2" "${PINS[@]}" >&2
echo "$VENV/bin/python"
