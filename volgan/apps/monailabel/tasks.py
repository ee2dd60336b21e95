"""MONAI Label tasks for volgan bundles (imports ``monailabel``; used by the app template's ``main.py``).

See ``volgan.apps.monailabel.app`` for what differs from MONAI Label's stock bundle tasks and why.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import monai.bundle
from monai.bundle import ConfigParser
import numpy as np
from monailabel.config import settings
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleConstants, BundleTrainTask
from monailabel.transform.post import Restored

from fastapi import HTTPException

from volgan.apps.monailabel.app import TRAIN_PARAMS, bundle_kind, check_train_request
from volgan.errors import VolganError, find_volgan_error

__all__ = ["check_upload", "served_image", "CheckedInferTask", "SynthesisInferTask", "VolganTrainConstants", "VolganBundleTrainTask",
           "make_infer_task"]

logger = logging.getLogger(__name__)


def check_upload(bundle_config: ConfigParser, image: str) -> None:
    """Run the bundle's own input check (its ``datalist`` id, what ``python -m monai.bundle run`` checks) on one
    image of an ``/infer/`` request, on a copy of the config (the served network is not rebuilt)."""
    parser = ConfigParser(copy.deepcopy(bundle_config.config))
    parser["input"] = str(image)
    try:
        parser.get_parsed_content("datalist")
    except Exception as e:  # noqa: BLE001 - MONAI wraps the VolganError of the check
        err = find_volgan_error(e)
        if err is None:
            raise
        raise err from None


def served_image(path: str, studies: str | None) -> bool:
    """Whether ``/infer/`` may read ``path``: an image of the datastore (below ``studies``) or a file MONAI Label
    stored an upload in (``tempfile.NamedTemporaryFile`` directly in the temp folder). MONAI Label itself runs
    inference on any existing path a client names (``?image=/any/file``)."""
    real = Path(os.path.realpath(path))
    if studies and not str(studies).startswith(("http://", "https://")):
        root = Path(os.path.realpath(studies))
        if real == root or root in real.parents:
            return True
    return real.parent == Path(os.path.realpath(tempfile.gettempdir())) and real.name.startswith("tmp")


class CheckedInferTask(BundleInferTask):
    """MONAI Label's bundle inference, with the request checked first: only datastore images and uploads are read
    (HTTP 403 otherwise), and a bad image (unreadable, wrong dimensions, NaN, a label map with values the generator
    does not know ...) is HTTP 422 with one line, not a 500."""

    def __call__(self, request: dict[str, Any], callbacks: Any = None):
        image = request.get("image")
        if isinstance(image, str):
            if not served_image(image, settings.MONAI_LABEL_STUDIES):
                logger.error(f"refused /infer/ request: {image} is neither an upload nor a datastore image")
                raise HTTPException(status_code=403, detail="the image must be an upload or an image of the datastore")
            try:
                check_upload(self.bundle_config, image)
            except VolganError as e:
                problem = getattr(e, "problem", str(e))
                logger.error(f"refused /infer/ request ({image}): {problem}")
                raise HTTPException(status_code=422, detail=f"the uploaded image: {problem}") from None
        return super().__call__(request, callbacks)


class SynthesisInferTask(CheckedInferTask):
    """A synthesis bundle as an image-producing MONAI Label model (``InferType.OTHERS``, float32 NIfTI out, restored to the input grid with linear interpolation)."""

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any):
        super().__init__(path, conf, type=InferType.OTHERS, **kwargs)
        if self.valid:
            self.labels = {}
            self.description = f"[synthesis: writes an image, not a label] {self.description or ''}".strip()

    def info(self) -> dict[str, Any]:
        i = super().info()
        i["output"] = "image"
        return i

    def post_transforms(self, data: Any = None) -> list:
        """The bundle's postprocessing, then back to the input grid with linear (not nearest) interpolation:
        volgan's synthesis preprocessing does not resample, so this only drops the channel dimension."""
        restore, self.add_post_restore = self.add_post_restore, False
        try:
            post = list(super().post_transforms(data))
        finally:
            self.add_post_restore = restore
        if restore:
            post.append(Restored(keys=self.key_pred, ref_image=self.key_image,
                                 mode="trilinear" if self.dimension == 3 else "bilinear"))
        return post

    def writer(self, data: dict[str, Any], extension: Any = None, dtype: Any = None):
        return super().writer(data, extension=extension, dtype=dtype or np.float32)


def make_infer_task(path: str, conf: dict[str, str]) -> BundleInferTask:
    """``SynthesisInferTask`` for synthesis bundles, ``CheckedInferTask`` (MONAI Label's ``BundleInferTask`` with the
    upload checked) for segmentors."""
    if bundle_kind(path) == "synthesis":
        return SynthesisInferTask(path, conf)
    task = CheckedInferTask(path, conf)
    if task.is_valid() and task.bundle_config.config.get("slice_axis") is not None:
        task.dimension = 3  # a 2D network run slice by slice over whole volumes (SlicewiseInferer)
    return task


class VolganTrainConstants(BundleConstants):
    """MONAI Label's training overrides mapped onto the volgan bundle interface (DESIGN.md)."""

    def key_train_trainer_max_epochs(self) -> str:
        return "max_epochs"

    def key_train_dataset_data(self) -> str:
        return "dataset_dir"  # volgan.data.resolve_dataset takes a list of {"image", "label"} as well as a path

    def key_validate_dataset_data(self) -> str:
        return "val_dataset_dir"

    def key_train_handlers(self) -> str:
        return "monailabel_train_handlers"  # volgan bundles attach their handlers in `initialize`


class VolganBundleTrainTask(BundleTrainTask):
    """``/train/<bundle>``: runs the bundle's ``train.yaml`` (with ``initialize``) on the datastore's labelled
    images; the trained network ends in ``models/model.pt`` of the bundle, which inference then serves.

    Request keys in ``TRAIN_PARAMS`` that the bundle defines (e.g. ``gan_iterations``, ``ratio``,
    ``image_size``) are passed to it; ``pretrained`` (default true) starts from ``models/model.pt``.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any):
        super().__init__(path, conf, const=VolganTrainConstants(), **kwargs)
        self._request: dict[str, Any] = {}

    def config(self) -> dict[str, Any]:
        c = super().config()
        c.update({k: self.bundle_config.config[k] for k in TRAIN_PARAMS if k in self.bundle_config.config})
        return c

    def __call__(self, request: dict[str, Any], datastore: Any):
        """Check the request (``check_train_request``: data only, known keys, declared types) before any of it
        reaches the bundle config; a bad one is HTTP 422 with one line (synchronous requests) and never runs."""
        try:
            self._request = check_train_request(request, self.bundle_config.config)
        except VolganError as e:
            logger.error(f"refused /train/ request: {e}")
            raise HTTPException(status_code=422, detail=str(e)) from None
        return super().__call__(self._request, datastore)

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        self._pretrained = model_pytorch if pretrained and os.path.isfile(model_pytorch) else None

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        overrides.pop(self.const.key_train_handlers(), None)
        overrides["output_dir"] = os.path.join(self.bundle_path, "models")
        overrides["resume"] = False  # a /train/ request is a new run; `pretrained` decides the starting weights
        overrides["overwrite"] = True  # ... that replaces the bundle's earlier training checkpoints
        overrides["device"] = str(overrides.get("device", "cpu"))
        for k in TRAIN_PARAMS:
            if k in self._request and k in self.bundle_config.config:
                overrides[k] = self._request[k]
        init = list(self.bundle_config.config.get("initialize", []))
        if getattr(self, "_pretrained", None):
            init.append(f"$volgan.io.load_weights(@network, {self._pretrained!r})")
        overrides["initialize"] = init
        logger.info(f"volgan bundle overrides: { {k: v for k, v in overrides.items() if 'dataset' not in k} }")
        return overrides

    def run_single_gpu(self, request: dict[str, Any], overrides: dict[str, Any]) -> None:
        monai.bundle.run(run_id=request.get("run_id", "run"), init_id="initialize", final_id="finalize",
                         meta_file=self.bundle_metadata_path, config_file=self.bundle_config_path, **overrides)

    def run_multi_gpu(self, request: dict[str, Any], cmd: list[str], env: dict[str, str]) -> None:
        self._run_command(cmd + ["--init_id", "initialize", "--final_id", "finalize"], env)
