"""volgan's MONAI Label app: serves every volgan bundle in ``model/<bundle_name>/``.

Synthesis bundles (MM-GAN label map -> MRI, CT <-> MRI) appear as image-producing models (infer type
``others``); segmentation bundles (the 2D slice-wise segmentors trained on real + synthetic data) are loaded
with MONAI Label's stock ``BundleInferTask`` and can be trained with ``/train/<bundle>``.

    volgan label-app APP --bundle mmgan_label2mri_3d=OUT/model.pt ...   # writes this file and model/
    monailabel start_server --app APP --studies STUDIES --host 127.0.0.1 \
        --conf models all --conf zoo_source local --conf sam2 false

conf keys: ``models`` (``all`` or comma-separated bundle folder names), ``skip_trainers`` (true/false).
"""

import logging
import os

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.utils.others.generic import strtobool

from volgan.apps.monailabel.app import bundle_kind, discover_bundles
from volgan.apps.monailabel.tasks import VolganBundleTrainTask, make_infer_task

logger = logging.getLogger(__name__)


class VolganApp(MONAILabelApp):
    def __init__(self, app_dir, studies, conf):
        self.model_dir = os.path.join(app_dir, "model")
        self.models = discover_bundles(self.model_dir, conf.get("models", "all"))
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, name=f"volgan ({monailabel.__version__})",
                         description="GAN synthesis and segmentation bundles from volgan",
                         version=monailabel.__version__)

    def init_infers(self):
        infers = {}
        for name, path in self.models.items():
            task = make_infer_task(path, self.conf)
            if task.is_valid():
                logger.info(f"+++ volgan infer: {name} ({bundle_kind(path)}, type {task.type})")
                infers[name] = task
            else:
                logger.warning(f"volgan: {name} skipped (no models/model.pt or inference config)")
        return infers

    def init_trainers(self):
        if strtobool(self.conf.get("skip_trainers", "false")):
            return {}
        trainers = {}
        for name, path in self.models.items():
            if bundle_kind(path) != "segmentation":
                continue  # GAN training runs from the command line (hours, several networks), not from a viewer
            task = VolganBundleTrainTask(path, self.conf)
            if task.is_valid():
                trainers[name] = task
        return trainers

    def init_strategies(self):
        return {"random": Random(), "first": First()}
