"""P3's training modes as one table (Sec. 2.2 and the baselines of Sec. 3): which stages run, whether the segmentor
learns inside the GAN stage, what the fine-tuning sees and at which learning rate. The bundle instantiates
``GanPretrainModes(mode)`` and asks it; no mode logic lives in the config."""

from __future__ import annotations

from typing import Any

from volgan.errors import VolganConfigError

__all__ = ["GanPretrainModes", "GAN_PRETRAIN_MODES"]

#: mode -> (stages that run, S joins the GAN stage, fine-tuning mixes synthetic slices, elastic augmentation,
#: fine-tuning at the low learning rate, where the offline synthetic slices come from). ``gaussian_mix`` is
#: volgan's non-GAN baseline (issue #20): ``gan_mix`` with per-label Gaussian images instead of the GAN's;
#: ``elastic_gan_mix`` combines the standard (elastic) augmentation with the GAN slices (#20's combination)
GAN_PRETRAIN_MODES: dict[str, dict[str, Any]] = {
    "ours": {"stages": ("gan", "finetune"), "joint": True, "mix": False, "elastic": False, "low_lr": True},
    "real_only": {"stages": ("finetune",), "joint": False, "mix": False, "elastic": False, "low_lr": False},
    "elastic": {"stages": ("finetune",), "joint": False, "mix": False, "elastic": True, "low_lr": False},
    "gan_mix": {"stages": ("gan", "finetune"), "joint": False, "mix": True, "elastic": False, "low_lr": False},
    "elastic_gan_mix": {"stages": ("gan", "finetune"), "joint": False, "mix": True, "elastic": True, "low_lr": False},
    "gaussian_mix": {"stages": ("finetune",), "joint": False, "mix": True, "elastic": False, "low_lr": False,
                     "source": "gaussian"},
    "gan_pretrain": {"stages": ("gan", "pretrain", "finetune"), "joint": False, "mix": False, "elastic": False,
                     "low_lr": True},
}


class GanPretrainModes:
    """The P3 bundle's ``mode``: ``ours`` (G, D and S train together, S on G's current images; then S is fine-tuned
    on real slices at ``lr_finetune``), ``real_only`` and ``elastic`` (fine-tuning alone at ``lr_s``, the latter
    with elastic deformation), ``gan_mix`` (offline GAN slices mixed with the real ones) and ``gan_pretrain``
    (S pre-trained on offline GAN slices, then fine-tuned at ``lr_finetune``); ``gaussian_mix`` is ``gan_mix``
    with per-label Gaussian images instead of a GAN's (the non-GAN baseline), ``elastic_gan_mix`` ``gan_mix`` with
    the elastic augmentation."""

    def __init__(self, mode: str = "ours"):
        if mode not in GAN_PRETRAIN_MODES:
            raise VolganConfigError(f"--mode must be one of {'|'.join(GAN_PRETRAIN_MODES)}, got {mode!r}")
        self.mode, self.spec = mode, GAN_PRETRAIN_MODES[mode]

    def runs(self, stage: str) -> bool:
        """Whether stage ``gan``, ``pretrain`` or ``finetune`` runs in this mode."""
        return stage in self.spec["stages"]

    def joint(self, obj: Any) -> Any:
        """``obj`` (the segmentor or its optimiser) when S trains inside the GAN stage (``ours``), else ``None``."""
        return obj if self.spec["joint"] else None

    @property
    def mixes_synthetic(self) -> bool:
        """Whether the fine-tuning data include the offline GAN slices (``gan_mix``)."""
        return self.spec["mix"]

    @property
    def elastic(self) -> bool:
        """Whether the fine-tuning slices are elastically deformed (``elastic``)."""
        return self.spec["elastic"]

    def offline_slices(self, gan: Any, gaussian: Any) -> Any:
        """The offline synthetic slices this mode uses: ``gaussian`` (``gaussian_mix``) or ``gan`` (the others);
        both are lazily generated datasets, so the one not chosen costs nothing."""
        return gaussian if self.spec.get("source") == "gaussian" else gan

    def finetune_lr(self, lr_s: float, lr_finetune: float) -> float:
        """The fine-tuning learning rate: ``lr_finetune`` after (joint or offline) pre-training, else ``lr_s``."""
        return float(lr_finetune if self.spec["low_lr"] else lr_s)
