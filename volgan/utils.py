"""Small helpers shared by every pipeline: seeding, devices, booleans from the CLI, atomic files."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from volgan.errors import VolganConfigError

__all__ = [
    "as_bool",
    "resolve_device",
    "amp_enabled",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_torch_save",
    "sha256_file",
    "safe_torch_load",
    "require",
]


def require(value: Any, name: str) -> Any:
    """``value``, or a ``VolganConfigError`` saying that ``--name`` is required when it is empty/None."""
    if value is None or (isinstance(value, (str, list, tuple, dict)) and not value):
        raise VolganConfigError(f"--{name} is required")
    return value

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", "none", ""}


def as_bool(value: Any) -> bool:
    """Coerce a config/CLI value to bool; ``"false"`` from ``monai.bundle run --amp false`` is False."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise VolganConfigError(f"expected a boolean, got {value!r}")


def resolve_device(device: Any = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; strings and devices pass through."""
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise VolganConfigError(f"invalid device {device!r}: {e}") from e


def amp_enabled(amp: Any, device: Any) -> bool:
    """AMP is used only on CUDA: ``amp`` true on a CPU device is ignored (DESIGN.md bundle interface)."""
    return as_bool(amp) and resolve_device(device).type == "cuda"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: str | os.PathLike, writer) -> Path:
    """Write through ``writer(fileobj)`` into a temp file in the same folder, fsync, rename into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically write ``data`` to ``path`` (temp file + fsync + rename)."""
    return _atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through a temp file in the same folder, fsynced and renamed: never a truncated file."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (checkpoint provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with a ``VolganDataError`` naming the file when it is unreadable."""
    from volgan.errors import VolganDataError

    if not os.path.isfile(path):
        raise VolganDataError(path, "checkpoint file does not exist")
    import zipfile

    if not zipfile.is_zipfile(path):  # torch.save writes zip archives since PyTorch 1.6
        raise VolganDataError(path, "not a PyTorch checkpoint (not a torch.save zip archive: corrupt, truncated "
                              "or another format)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise VolganDataError(path, f"cannot read checkpoint ({type(e).__name__}: {e})") from e
