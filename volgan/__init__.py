"""volgan: GAN-based synthesis of 3D and 2D medical images for data-efficient segmentation, on MONAI.

Public API (P1 MM-GAN so far): networks (``SNUNetGenerator``, ``PatchDiscriminator``), ``ImagePool``,
``LSGANLoss``, ``ConditionalGanTrainer``, transforms (``TumourPerturbd``, ``ForegroundNormalized``,
``BrainAsLabeld``, ``ValidateVolumed``), ``synthesize`` and the evaluation helpers.
"""

__version__ = "0.1.0"

from volgan import data, engines, handlers, losses, networks, utils  # noqa: E402
from volgan.data import BrainAsLabeld, ForegroundNormalized, TumourPerturbd, ValidateVolumed  # noqa: E402
from volgan.engines import ConditionalGanTrainer, ImagePool  # noqa: E402
from volgan.errors import VolganConfigError, VolganDataError, VolganError  # noqa: E402
from volgan.losses import LSGANLoss  # noqa: E402
from volgan.networks import PatchDiscriminator, SNUNetGenerator  # noqa: E402


def __getattr__(name):  # lazy: inference/evaluation import more of MONAI
    if name == "synthesize":
        from volgan.inference import synthesize

        return synthesize
    if name in ("inference", "evaluation", "segmentation", "metrics", "bundle", "export", "tracking"):
        import importlib

        return importlib.import_module(f"volgan.{name}")
    raise AttributeError(f"module 'volgan' has no attribute {name!r}")


__all__ = [
    "__version__",
    "data", "engines", "handlers", "losses", "networks", "utils",
    "BrainAsLabeld", "ForegroundNormalized", "TumourPerturbd", "ValidateVolumed",
    "ConditionalGanTrainer", "ImagePool", "LSGANLoss", "PatchDiscriminator", "SNUNetGenerator",
    "VolganConfigError", "VolganDataError", "VolganError", "synthesize",
]
