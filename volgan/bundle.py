"""Locate volgan's bundles and run their configs from Python (``monai.bundle.ConfigWorkflow``), as
``python -m monai.bundle run`` does: ``evaluate`` and ``multi_gpu_train`` are overrides merged onto ``train.yaml``
(the model zoo's way), ``train`` and ``inference`` stand alone."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from volgan.config import resolve_device
from volgan.errors import VolganConfigError, find_volgan_error
from volgan.io import atomic_torch_save, safe_torch_load, weights_sidecar

__all__ = ["bundles_root", "bundle_names", "bundle_path", "export_bundle", "config_files", "run_bundle",
           "OVERRIDE_CONFIGS"]

#: configs that are overrides of train.yaml (merged onto it, as in MONAI's model zoo)
OVERRIDE_CONFIGS = ("evaluate", "multi_gpu_train")
_WORKFLOW_TYPES = {"train": "train", "multi_gpu_train": "train", "inference": "infer"}


def bundles_root() -> Path:
    """``$VOLGAN_BUNDLES``, the bundles installed with the package (``volgan/bundles`` in a wheel), or the
    ``bundles/`` folder beside the package (a source checkout / editable install)."""
    env = os.environ.get("VOLGAN_BUNDLES")
    here = Path(__file__).resolve().parent
    root = Path(env) if env else next((p for p in (here / "bundles", here.parent / "bundles") if p.is_dir()),
                                      here.parent / "bundles")
    if not root.is_dir():
        raise VolganConfigError(f"bundles folder {root} not found: reinstall volgan (its wheel carries them) or set "
                                "VOLGAN_BUNDLES")
    return root


def bundle_names() -> list[str]:
    """Every bundle in ``bundles_root()`` (a folder with ``configs/metadata.json``)."""
    return sorted(p.name for p in bundles_root().iterdir() if (p / "configs" / "metadata.json").is_file())


def bundle_path(name: str) -> Path:
    """Folder of bundle ``name``."""
    path = bundles_root() / name
    if not (path / "configs").is_dir():
        raise VolganConfigError(f"no bundle {name!r} in {bundles_root()}; bundles: {bundle_names()}")
    return path


def _plain_weights(src: Path, dest: Path) -> None:
    """``src`` as a plain state dict at ``dest`` (the pre-0.2 ``{"model": state_dict}`` form unwrapped), with its
    ``model.json`` sidecar when there is one."""
    ck = safe_torch_load(src)
    if isinstance(ck, dict) and set(ck) == {"model"} and isinstance(ck["model"], dict):
        ck = ck["model"]
    if not isinstance(ck, dict):
        raise VolganConfigError(f"{src}: not network weights (a {type(ck).__name__}, expected a state dict)")
    atomic_torch_save(ck, dest)
    if weights_sidecar(src).is_file():
        shutil.copy(weights_sidecar(src), weights_sidecar(dest))


def export_bundle(name: str, output_dir: str | os.PathLike, ckpt_path: str | os.PathLike | None = None,
                  overwrite: bool = False) -> Path:
    """A self-contained MONAI model-zoo layout of bundle ``name`` in ``output_dir/name``: ``configs/``, ``docs/``,
    ``LICENSE`` and, from a training run's ``ckpt_path`` (a plain state dict, what the zoo loads), ``models/model.pt``
    with its ``model.json``. Refuses an existing folder unless ``overwrite``; written in a staging folder and moved
    into place at the end."""
    src = bundle_path(name)
    dest = Path(output_dir) / name
    if dest.exists() and not overwrite:
        raise VolganConfigError(f"{dest} exists; pass --overwrite to replace it")
    if ckpt_path is not None and not Path(ckpt_path).is_file():
        raise VolganConfigError(f"no weights file {ckpt_path}")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=str(output_dir)))
    try:
        for part in ("configs", "docs"):
            shutil.copytree(src / part, stage / part, ignore=shutil.ignore_patterns("__pycache__"))
        lic = next((p for p in (src / "LICENSE", Path(__file__).resolve().parent.parent / "LICENSE") if p.is_file()),
                   None)
        if lic is not None:
            shutil.copy(lic, stage / "LICENSE")
        if ckpt_path is not None:
            (stage / "models").mkdir()
            _plain_weights(Path(ckpt_path), stage / "models" / "model.pt")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dest


def config_files(name: str, config: str = "train") -> list[str]:
    """The config files of ``python -m monai.bundle run --config_file ...`` for ``config`` of bundle ``name``:
    ``[train.yaml, <config>.yaml]`` for the overrides, ``[<config>.yaml]`` otherwise."""
    root = bundle_path(name)
    cfg = root / "configs" / f"{config}.yaml"
    if not cfg.is_file():
        raise VolganConfigError(f"bundle {name} has no configs/{config}.yaml")
    return [str(root / "configs" / "train.yaml"), str(cfg)] if config in OVERRIDE_CONFIGS else [str(cfg)]


def run_bundle(name: str, config: str = "train", **overrides: Any):
    """Run ``config`` of bundle ``name`` like ``python -m monai.bundle run`` with ``overrides``.

    Returns the ``ConfigWorkflow``; ``wf.outputs`` holds what the ``run`` expressions returned (an evaluation's
    report), and its parsed objects stay reachable (``wf.parser.get_parsed_content``). A ``VolganError`` wrapped by
    MONAI's config machinery is re-raised as itself.
    """
    root = bundle_path(name)
    overrides.setdefault("bundle_root", str(root))
    if isinstance(overrides.get("device"), str):  # "auto" (the CLI's default) means CUDA when there is one
        overrides["device"] = str(resolve_device(overrides["device"]))
    wf = ConfigWorkflow(config_file=config_files(name, config), meta_file=str(root / "configs" / "metadata.json"),
                        logging_file=str(root / "configs" / "logging.conf"),
                        workflow_type=_WORKFLOW_TYPES.get(config), **overrides)
    try:
        wf.initialize()
        wf.outputs = wf.run()
        wf.finalize()
    except Exception as e:
        err = find_volgan_error(e)
        if err is not None and err is not e:
            raise err from e
        raise
    return wf
