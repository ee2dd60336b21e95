"""Locate volgan's bundles and run their configs from Python (``monai.bundle.ConfigWorkflow``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from volgan.errors import VolganConfigError, find_volgan_error

__all__ = ["BUNDLE_NAMES", "bundles_root", "bundle_path", "run_bundle"]

BUNDLE_NAMES = ("mmgan_label2mri_3d", "cycleshape_ct_mri_3d", "gan_pretrain_seg_2d", "adversarial_unet_aug_2d",
                "wgan_pairs_seg_2d")


def bundles_root() -> Path:
    """``$VOLGAN_BUNDLES`` or the ``bundles/`` folder beside the package (a source checkout / editable install)."""
    env = os.environ.get("VOLGAN_BUNDLES")
    root = Path(env) if env else Path(__file__).resolve().parent.parent / "bundles"
    if not root.is_dir():
        raise VolganConfigError(f"bundles folder {root} not found: install volgan from a source checkout "
                                "(pip install -e .) or set VOLGAN_BUNDLES")
    return root


def bundle_path(name: str) -> Path:
    """Folder of bundle ``name``."""
    path = bundles_root() / name
    if not (path / "configs").is_dir():
        raise VolganConfigError(f"no bundle {name!r} in {bundles_root()}")
    return path


def run_bundle(name: str, config: str = "train", **overrides: Any):
    """Run ``bundles/<name>/configs/<config>.yaml`` like ``python -m monai.bundle run`` with ``overrides``.

    Returns the ``ConfigWorkflow`` (its parsed objects stay reachable, e.g. ``wf.parser.get_parsed_content``).
    A ``VolganError`` wrapped by MONAI's config machinery is re-raised as itself.
    """
    from monai.bundle import ConfigWorkflow

    root = bundle_path(name)
    cfg = root / "configs" / f"{config}.yaml"
    if not cfg.is_file():
        raise VolganConfigError(f"bundle {name} has no configs/{config}.yaml")
    files = [str(cfg)]
    if config == "multi_gpu_train":  # an override of train.yaml, as in MONAI's model zoo
        files = [str(root / "configs" / "train.yaml"), str(cfg)]
    overrides.setdefault("bundle_root", str(root))
    wf = ConfigWorkflow(config_file=files, meta_file=str(root / "configs" / "metadata.json"),
                        logging_file=str(root / "configs" / "logging.conf"), workflow_type={"train": "train", "multi_gpu_train": "train", "inference": "infer"}.get(config),
                        **overrides)
    try:
        wf.initialize()
        wf.run()
        wf.finalize()
    except Exception as e:
        err = find_volgan_error(e)
        if err is not None and err is not e:
            raise err from e
        raise
    return wf
