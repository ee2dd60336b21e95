"""The one set of keys every volgan trainer writes into ``engine.state.output`` (named so as not to shadow
``monai.utils.GanKeys``, whose meaning differs)."""

from monai.utils import StrEnum

__all__ = ["OutputKeys"]


class OutputKeys(StrEnum):
    """Keys of ``engine.state.output`` of every volgan trainer (``engine.state.output[OutputKeys.G_LOSS]``).

    Tensors (detached, for image logging): COND, REAL, FAKE (conditional GANs, WGAN-GP); REAL_A, REAL_B, FAKE_A,
    FAKE_B, REC_A (cycle GAN); IMAGE, LABEL, PRED (segmentor trainers, as MONAI's ``CommonKeys``).
    Scalars: G_LOSS, G_ADV, G_REC, D_LOSS, D_REAL, D_FAKE (mean critic scores), S_LOSS, CYCLE, SHAPE,
    WASSERSTEIN (the critic's Wasserstein estimate), GP (gradient penalty), LOSS (segmentor). PHASE: the
    cycle GAN's training phase.
    """

    COND = "cond"
    REAL = "real"
    FAKE = "fake"
    REAL_A = "real_a"
    REAL_B = "real_b"
    FAKE_A = "fake_a"
    FAKE_B = "fake_b"
    REC_A = "rec_a"
    IMAGE = "image"
    LABEL = "label"
    PRED = "pred"
    G_LOSS = "g_loss"
    G_ADV = "g_adv"
    G_REC = "g_rec"
    D_LOSS = "d_loss"
    D_REAL = "d_real"
    D_FAKE = "d_fake"
    S_LOSS = "s_loss"
    CYCLE = "cycle"
    SHAPE = "shape"
    WASSERSTEIN = "wasserstein"
    GP = "gp"
    LOSS = "loss"
    PHASE = "phase"
