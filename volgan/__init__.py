"""volgan: GAN-based synthesis of 3D and 2D medical images for data-efficient segmentation, on MONAI.

The package reads as the pipeline, each layer importing only from those before it (``docs/architecture.md``):
``errors``, ``config``, ``io``, ``distributed``, ``bundle`` -> ``data`` -> ``networks`` -> ``losses`` ->
``handlers`` -> ``engines`` -> ``tracking`` -> ``inferers`` -> ``synthesis`` -> ``evaluation`` -> ``apps``.

Public API: the five methods' networks, losses, trainers and transforms (``SNUNetGenerator``,
``PatchDiscriminator``, ``ImagePool``, ``LSGANLoss``, ``ConditionalGanTrainer``, ``CycleShapeTrainer``,
``WganGpTrainer``, ``RandLesionPerturbd`` ...), ``synthesize`` and the evaluation harness
(``compare_segmentation``, ``evaluate_bundle``).
"""

from volgan.version import __version__
from volgan import bundle, config, distributed, errors, io  # noqa: E402
from volgan import data, engines, handlers, losses, networks, tracking  # noqa: E402
from volgan.data import (  # noqa: E402
    BrainAsLabeld,
    ForegroundNormalized,
    LesionPerturbd,
    RandLesionPerturbd,
    ValidateVolumed,
)
from volgan.engines import (  # noqa: E402
    ConditionalGanTrainer,
    CycleShapeTrainer,
    ImagePool,
    PairCriticWganGpTrainer,
    SegmentorTrainer,
    StagedTraining,
    WganGpTrainer,
)
from volgan.errors import VolganConfigError, VolganDataError, VolganError  # noqa: E402
from volgan.losses import LSGANLoss  # noqa: E402
from volgan.networks import PatchDiscriminator, SNUNetGenerator  # noqa: E402
from volgan import inferers, synthesis, evaluation  # noqa: E402
from volgan.synthesis import synthesize  # noqa: E402
from volgan.evaluation import compare_segmentation, evaluate_bundle  # noqa: E402

__all__ = [
    "__version__",
    "bundle", "config", "distributed", "errors", "io",
    "data", "engines", "handlers", "losses", "networks", "tracking", "inferers", "synthesis", "evaluation",
    "BrainAsLabeld", "ForegroundNormalized", "LesionPerturbd", "RandLesionPerturbd", "ValidateVolumed",
    "ConditionalGanTrainer", "CycleShapeTrainer", "ImagePool", "PairCriticWganGpTrainer", "SegmentorTrainer",
    "StagedTraining", "WganGpTrainer",
    "VolganConfigError", "VolganDataError", "VolganError",
    "LSGANLoss", "PatchDiscriminator", "SNUNetGenerator",
    "synthesize", "compare_segmentation", "evaluate_bundle",
]
