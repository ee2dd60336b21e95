"""Keys of the dicts volgan's trainers put in ``engine.state.output``."""

from monai.utils import StrEnum

__all__ = ["GanKeys"]


class GanKeys(StrEnum):
    """Output keys of the adversarial trainers (``engine.state.output[GanKeys.G_LOSS]`` ...)."""

    COND = "cond"
    REAL = "real"
    FAKE = "fake"
    G_LOSS = "g_loss"
    G_ADV = "g_adv"
    G_REC = "g_rec"
    D_LOSS = "d_loss"
    D_REAL = "d_real"
    D_FAKE = "d_fake"
    S_LOSS = "s_loss"
    SKIPPED = "skipped_steps"
