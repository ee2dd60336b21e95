"""Config and CLI values coerced to what the code needs: booleans, devices, AMP, ratios (every bundle id goes
through these, so ``--amp false`` on ``python -m monai.bundle run`` means False everywhere)."""

from __future__ import annotations

import os

from collections.abc import Mapping
from typing import Any

import torch

from volgan.errors import VolganConfigError

__all__ = ["jsonable", "as_bool", "resolve_device", "on_cuda", "amp_enabled", "require", "choose", "parse_ratio",
           "TRAINER_OPTIONS", "trainer_options"]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", "none", ""}


def jsonable(x: Any) -> Any:
    """A JSON-ready copy: tuples as lists, mappings with string keys, numpy/torch scalars as numbers."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if hasattr(x, "item") and callable(x.item):
        return x.item()
    return str(x)


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
    """``None``/``"auto"`` -> CUDA when available (under torchrun this process's GPU, ``cuda:<LOCAL_RANK>``), else
    CPU; strings and devices pass through."""
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ['LOCAL_RANK'])}" if "LOCAL_RANK" in os.environ else "cuda")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise VolganConfigError(f"invalid device {device!r}: {e}") from e


def on_cuda(device: Any) -> bool:
    """Whether ``device`` is a CUDA device (fused optimisers and pinned memory are switched on there)."""
    return resolve_device(device).type == "cuda"


def amp_enabled(amp: Any, device: Any) -> bool:
    """AMP is used only on CUDA: ``amp`` true on a CPU device is ignored (DESIGN.md bundle interface)."""
    return as_bool(amp) and on_cuda(device)


def require(value: Any, name: str) -> Any:
    """``value``, or a ``VolganConfigError`` saying that ``--name`` is required when it is empty/None."""
    if value is None or (isinstance(value, (str, list, tuple, dict)) and not value):
        raise VolganConfigError(f"--{name} is required")
    return value


def choose(value: Any, options: Mapping[str, Any], name: str) -> Any:
    """``options[value]``: a config choice (``--direction a2b``) resolved to what it selects, or one line naming
    the allowed values."""
    key = str(value)
    if key not in options:
        raise VolganConfigError(f"--{name} must be one of {'|'.join(map(str, options))}, got {value!r}")
    return options[key]


def parse_ratio(ratio: Any, total: int | None = None) -> tuple[int, int]:
    """``"8-8"`` -> (8, 8): real and synthetic items per minibatch (P5's ratios 16-0, 8-8, 0-16)."""
    parts = str(ratio).split("-")
    try:
        n_real, n_syn = (int(p) for p in parts)
    except ValueError:
        raise VolganConfigError(f"ratio must be '<real>-<synthetic>' such as 8-8, got {ratio!r}") from None
    if n_real < 0 or n_syn < 0 or n_real + n_syn == 0 or (total is not None and n_real + n_syn != total):
        want = f" adding up to {total}" if total is not None else ""
        raise VolganConfigError(f"ratio {ratio!r}: need two non-negative counts{want}, not both 0")
    return n_real, n_syn


#: the trainer options every bundle exposes as top-level ids (DESIGN.md bundle interface), with their defaults
TRAINER_OPTIONS: dict[str, Any] = {"amp": False, "amp_dtype": "float16", "grad_accum_steps": 1,
                                   "cudnn_benchmark": True, "max_nonfinite_steps": 10,
                                   "nonfinite_check_interval": None}


def trainer_options(options: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """The trainer options (``TRAINER_OPTIONS`` defaults, then ``options``, then ``overrides``), checked and
    coerced: what every volgan trainer takes as ``options=`` (a bundle passes ``@trainer_options``)."""
    opts = {**TRAINER_OPTIONS, **dict(options or {}), **overrides}
    unknown = sorted(set(opts) - set(TRAINER_OPTIONS))
    if unknown:
        raise VolganConfigError(f"unknown trainer option(s) {unknown}; choose from {sorted(TRAINER_OPTIONS)}")
    opts["amp"], opts["cudnn_benchmark"] = as_bool(opts["amp"]), as_bool(opts["cudnn_benchmark"])
    if opts["amp_dtype"] not in ("float16", "bfloat16"):
        raise VolganConfigError(f"amp_dtype must be float16 or bfloat16, got {opts['amp_dtype']!r}")
    for key, low in (("grad_accum_steps", 1), ("max_nonfinite_steps", 0)):
        opts[key] = _int_at_least(opts[key], low, key)
    if opts["nonfinite_check_interval"] is not None:
        opts["nonfinite_check_interval"] = _int_at_least(opts["nonfinite_check_interval"], 1,
                                                         "nonfinite_check_interval")
    return opts


def _int_at_least(value: Any, low: int, name: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise VolganConfigError(f"{name} must be an integer >= {low}, got {value!r}") from None
    if v < low or (isinstance(value, float) and v != value):
        raise VolganConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return v
