"""Files written and read safely: atomic writes (temp file, fsync, rename), checksums, weights-only checkpoint
loading, and network weights as plain state dicts (what the model zoo and MONAI Label load)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from volgan.config import as_bool, jsonable
from volgan.errors import VolganConfigError, VolganDataError
from volgan.version import __version__

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_torch_save",
    "sha256_file",
    "safe_torch_load",
    "state_dict_of",
    "save_weights",
    "load_weights",
    "weights_sidecar",
    "read_sidecar",
    "trained_with",
    "prepare_output_dir",
    "prepare_inference",
    "OutputLock",
]


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
    if not os.path.isfile(path):
        raise VolganDataError(path, "checkpoint file does not exist")
    if not zipfile.is_zipfile(path):  # torch.save writes zip archives since PyTorch 1.6
        raise VolganDataError(path, "not a PyTorch checkpoint (not a torch.save zip archive: corrupt, truncated "
                              "or another format)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        raise VolganDataError(path, f"cannot read checkpoint ({type(e).__name__}: {e})") from e


def state_dict_of(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The network's weights on the CPU, unwrapped from DDP/DataParallel (``module.`` prefixes never saved)."""
    net = network.module if hasattr(network, "module") else network
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


def weights_sidecar(path: str | os.PathLike) -> Path:
    """The JSON beside a weights file (``model.pt`` -> ``model.json``) that says how the network was built and
    what it was trained with."""
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of weights file ``path`` (``None`` when there is none: weights from before volgan 0.3)."""
    side = weights_sidecar(path)
    if not side.is_file():
        return None
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise VolganDataError(side, f"unreadable weights sidecar ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise VolganDataError(side, "weights sidecar is not a JSON object")
    return data


def trained_with(path: str | os.PathLike, key: str, default: Any = None) -> Any:
    """What weights file ``path`` was trained with: ``key`` of its network definition (e.g. ``channels``,
    ``norm_stats``) or of its recorded conventions (e.g. ``label_values``); ``default`` when the sidecar or the
    key is absent. Inference configs take their network settings from here, so a checkpoint needs no one to
    remember them."""
    side = read_sidecar(path) if path else None
    if not side:
        return default
    for section in ("network", "trained_with"):
        values = side.get(section) or {}
        if isinstance(values, Mapping) and key in values:
            return values[key]
    return default


def save_weights(network: torch.nn.Module, path: str | os.PathLike, meta: Mapping[str, Any] | None = None) -> Path:
    """Write the network's weights to ``path`` as a plain state dict, atomically (the ``models/model.pt`` form the
    model zoo's ``ckpt_export`` and MONAI Label load), and beside it ``weights_sidecar(path)``: the network's
    definition (how to build it, ``volgan.networks.definition``) and ``meta`` (the label and intensity
    conventions it was trained with)."""
    net = network.module if hasattr(network, "module") else network
    definition = getattr(net, "definition", None)
    if definition is not None or meta:
        atomic_write_json(weights_sidecar(path), {"volgan": __version__, "network": jsonable(definition),
                                                   "trained_with": jsonable(dict(meta or {}))})
    return atomic_torch_save(state_dict_of(network), path)


def _described(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def load_weights(network: torch.nn.Module, path: str | os.PathLike, map_location: Any = "cpu") -> torch.nn.Module:
    """Load weights saved by ``save_weights`` (a plain state dict) or by volgan before 0.2 (``{"model": state_dict}``)
    into ``network``. When both the file's sidecar and the network record their definition, they must agree (one
    ``VolganConfigError`` names the settings that differ); weights that do not fit are one line too."""
    net = network.module if hasattr(network, "module") else network
    side = read_sidecar(path)
    here, there = getattr(net, "definition", None), (side or {}).get("network")
    if isinstance(here, Mapping) and isinstance(there, Mapping):
        here = jsonable(here)
        differ = [k for k in dict.fromkeys([*there, *here]) if there.get(k) != here.get(k)]
        if differ:
            raise VolganConfigError(
                f"{path}: trained as {_described({k: there.get(k) for k in differ})}, but the network built here "
                f"has {_described({k: here.get(k) for k in differ})}: leave those settings unset (inference reads "
                f"them from {weights_sidecar(path).name}) or pass the training run's values")
    ck = safe_torch_load(path, map_location)
    if isinstance(ck, Mapping) and set(ck) == {"model"} and isinstance(ck["model"], Mapping):
        ck = ck["model"]
    if not isinstance(ck, Mapping):
        raise VolganDataError(path, f"not network weights (a {type(ck).__name__}, expected a state dict)")
    try:
        net.load_state_dict(ck)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), "")
        raise VolganConfigError(f"{path}: the weights do not fit the {type(net).__name__} built here (pass the "
                                f"training run's network settings): {first} {detail[:200]}".rstrip()) from e
    return network


def prepare_output_dir(output_dir: str | os.PathLike, overwrite: Any = False) -> Path:
    """Create ``output_dir``; refuse a non-empty one unless ``overwrite`` (outputs are never replaced silently)."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise VolganConfigError(f"output_dir {out} exists and is not a folder")
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".staging")) and not as_bool(overwrite):
        raise VolganConfigError(f"output_dir {out} is not empty; pass --overwrite true to write into it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepare_inference(ckpt_path: str | os.PathLike, output_dir: str | os.PathLike, overwrite: Any = False,
                      checked_inputs: Any = None, resume: Any = False) -> Path:
    """What an inference run checks before it writes anything: its inputs (``checked_inputs``, already resolved
    and checked by the caller, e.g. a bundle's ``@datalist``), that the weights are a readable, weights-only
    checkpoint, and that ``output_dir`` is new or empty (``prepare_output_dir``; ``resume``: an earlier run's
    folder is continued); returns the output folder."""
    safe_torch_load(ckpt_path)
    return prepare_output_dir(output_dir, as_bool(overwrite) or as_bool(resume))


class OutputLock:
    """A run's claim on its output folder: ``<folder>/.volgan.lock`` holding pid, host and time, made with
    ``O_EXCL`` and removed when the run ends. A second run into the folder while the owner lives is one
    ``VolganConfigError`` naming it; a lock left by a process that no longer exists (same host) is taken over."""

    NAME = ".volgan.lock"

    def __init__(self, folder: str | os.PathLike, enabled: bool = True):
        self.path, self.enabled, self.held = Path(folder) / self.NAME, bool(enabled), False

    def __enter__(self) -> OutputLock:
        if not self.enabled:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner.get("pid") == os.getpid() and owner.get("host") == me["host"]:
                    return self  # this process already holds it (nested runs)
                if owner.get("host") == me["host"] and not _alive(owner.get("pid")):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise VolganConfigError(f"{self.path.parent} is being written by another run (pid "
                                        f"{owner.get('pid')} on {owner.get('host')}, lock {self.path}): wait for it, "
                                        "choose another --output_dir, or remove the lock if that run is dead")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise VolganConfigError(f"{self.path}: could not take the output folder's lock")

    def _owner(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def __exit__(self, *exc: Any) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def _alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True  # it exists, under another user
    except (OSError, TypeError, ValueError):
        return False
    return True
