"""Locate volgan's bundles and run their configs from Python (``monai.bundle.ConfigWorkflow``), as
``python -m monai.bundle run`` does: ``evaluate`` and ``multi_gpu_train`` are overrides merged onto ``train.yaml``
(the model zoo's way), ``train`` and ``inference`` stand alone."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from monai.bundle import ConfigWorkflow

from volgan.config import resolve_device
from volgan.errors import VolganConfigError, find_volgan_error

__all__ = ["bundles_root", "bundle_names", "bundle_path", "config_files", "run_bundle", "OVERRIDE_CONFIGS"]

#: configs that are overrides of train.yaml (merged onto it, as in MONAI's model zoo)
OVERRIDE_CONFIGS = ("evaluate", "multi_gpu_train")
_WORKFLOW_TYPES = {"train": "train", "multi_gpu_train": "train", "inference": "infer"}


def bundles_root() -> Path:
    """``$VOLGAN_BUNDLES`` or the ``bundles/`` folder beside the package (a source checkout / editable install)."""
    env = os.environ.get("VOLGAN_BUNDLES")
    root = Path(env) if env else Path(__file__).resolve().parent.parent / "bundles"
    if not root.is_dir():
        raise VolganConfigError(f"bundles folder {root} not found: install volgan from a source checkout "
                                "(pip install -e .) or set VOLGAN_BUNDLES")
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
