"""The methods the evaluation harness knows: one entry per bundle, naming how it is compared and with which settings.
Adding a method to ``volgan evaluate`` is one entry here (its code and bundle aside)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from volgan.errors import VolganConfigError

__all__ = ["MethodEntry", "METHODS", "method", "SEGMENTATION_SETTINGS", "FILTERED_SETTING", "BASELINE_SETTINGS",
           "CYCLESHAPE_MODES"]

#: the settings of ``compare_segmentation`` (MM-GAN's Table IV plus synthetic-only and pre-train + fine-tune)
SEGMENTATION_SETTINGS = ("real", "synthetic", "real+100%", "real+300%", "real+500%", "pretrain+finetune")
#: real + 100 % synthetic pairs drawn from the better half by quality score (``volgan.evaluation.filter_pairs``):
#: against ``real+100%`` it isolates what the quality filter adds (issue #19); run with ``--settings``
FILTERED_SETTING = "real+100% filtered"
#: the baselines of issue #20 every MM-GAN comparison includes: standard augmentation (MONAI random transforms),
#: a per-label Gaussian image model from the same label maps (no GAN), and augmentation + GAN pairs
BASELINE_SETTINGS = ("real+aug", "real+100% gaussian", "real+aug+100%")

#: P2's comparison (Sec. 4.2, Table 1): CycleGAN, then segmentors trained on translated data afterwards (ada),
#: then joint training with the shape-consistency loss (ours); cyclegan's real-data segmentors score the S-score
CYCLESHAPE_MODES = ("cyclegan", "ada", "ours")


@dataclass(frozen=True)
class MethodEntry:
    """How the harness compares one method.

    Attributes:
        bundle: the bundle's name.
        harness: ``"synthesis"`` (synthesise pairs with a trained generator, then train the same segmentor under
            ``SEGMENTATION_SETTINGS``), ``"unpaired"`` (train the bundle in each mode on two domains, score with
            its evaluate config) or ``"settings"`` (train the bundle under each setting's overrides, score with
            its evaluate config).
        settings: setting name -> bundle overrides (``"settings"`` and ``"unpaired"``).
        share_gan: (setting that trains the GAN, settings that reuse it): same GAN and seed, only its use differs.
        reference: the setting whose run is the others' reference: their paired differences to it get bootstrap
            intervals and verdicts (real only; P2: cyclegan, whose segmentors also score the S-score).
        quick: overrides of ``--quick`` (smoke-run budgets).
        budget: the options ``--budget F`` scales (their train.yaml defaults, the paper's budget, times F;
            ``iterations``: the harness segmentor's).
        train_quick: ``synthesis`` methods: the bundle's train.yaml overrides of ``--quick`` when the harness trains
            the generator itself (learning curves: one GAN per size and seed).
        val_key: the train.yaml option of a fixed validation set (methods that stop early on held-out cases):
            learning curves set cases aside for it, so every point validates on the same cases.
    """

    bundle: str
    harness: str
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    share_gan: tuple[str, tuple[str, ...]] | None = None
    reference: str | None = None
    quick: dict[str, Any] = field(default_factory=dict)
    budget: tuple[str, ...] = ()
    train_quick: dict[str, Any] = field(default_factory=dict)
    val_key: str | None = None


METHODS: dict[str, MethodEntry] = {e.bundle: e for e in (
    MethodEntry("mmgan_label2mri_3d", "synthesis",
                {s: {} for s in ("real", *BASELINE_SETTINGS, *SEGMENTATION_SETTINGS[1:], FILTERED_SETTING)},
                quick={"iterations": 4, "segmentor": {"channels": [4, 8, 16, 32], "patch_size": [16, 16, 16]},
                       "roi_size": [32, 32, 32]}, budget=("iterations", "max_epochs"),
                train_quick=dict(max_epochs=1, patch_size=[16, 16, 16], gen_channels=[4, 8, 16, 32],
                                 disc_channels=[8, 16, 16], amp=False)),
    MethodEntry("cycleshape_ct_mri_3d", "unpaired", {m: {"mode": m} for m in CYCLESHAPE_MODES}, reference="cyclegan",
                quick=dict(patch_size=[16, 16, 16], gen_channels=[8, 16, 32, 32], disc_channels=[8, 16, 16, 16],
                           disc_strides=[2, 2, 1, 1], seg_channels=[8, 16, 32, 64], max_epochs=2, pretrain_s_epochs=1,
                           pretrain_gd_epochs=1, roi_size=[16, 16, 16], amp=False, pool_size=2),
                budget=("max_epochs", "pretrain_s_epochs", "pretrain_gd_epochs")),
    MethodEntry("gan_pretrain_seg_2d", "settings",
                {m: {"mode": m} for m in ("real_only", "elastic", "gaussian_mix", "gan_mix", "elastic_gan_mix",
                                          "gan_pretrain", "ours")},
                share_gan=("gan_mix", ("elastic_gan_mix", "gan_pretrain")), reference="real_only",
                quick=dict(image_size=[32, 32], ngf=8, n_blocks=2, disc_channels=[8, 16, 16, 16],
                           disc_strides=[2, 2, 1, 1], seg_channels=[8, 16, 32, 64], gan_epochs=1, finetune_epochs=1,
                           synthetic_copies=1, amp=False), budget=("gan_epochs", "finetune_epochs")),
    MethodEntry("wgan_pairs_seg_2d", "settings",
                {f"{r} {'aug' if a else 'no aug'}": {"ratio": r, "augment": a}
                 for a in (False, True) for r in ("16-0", "8-8", "0-16")},
                share_gan=("8-8 no aug", ("0-16 no aug", "8-8 aug", "0-16 aug")), reference="16-0 no aug",
                quick=dict(image_size=[32, 32], gen_channels=32, critic_channels=8, unet_channels=[8, 8, 8],
                           gan_iterations=4, max_epochs=2, val_interval=2, patience_iterations=100, amp=False),
                budget=("gan_iterations", "max_epochs", "patience_iterations"), val_key="val_dataset_dir"),
    MethodEntry("adversarial_unet_aug_2d", "settings",
                {"without augmenter": {"augment_with_gan": False, "augment": False},
                 "standard augmentation": {"augment_with_gan": False, "augment": True},
                 "with augmenter": {"augment_with_gan": True, "augment": False},
                 "augmenter + standard augmentation": {"augment_with_gan": True, "augment": True}},
                share_gan=("with augmenter", ("augmenter + standard augmentation",)), reference="without augmenter",
                quick=dict(image_size=[32, 32], gen_channels=[4, 8, 8], critic_features=4, critic_growth=4,
                           critic_blocks=[1, 1, 1, 1], unet_channels=[8, 8, 8], gan_batch_size=4, gan_iterations=2,
                           max_epochs=2, val_interval=2, amp=False),
                budget=("gan_iterations", "max_epochs", "patience_iterations"), val_key="val_dataset_dir"),
)}


def method(bundle: str) -> MethodEntry:
    """The registry entry of ``bundle``, or one line naming the bundles the harness knows."""
    if bundle not in METHODS:
        raise VolganConfigError(f"volgan evaluate knows {sorted(METHODS)}; {bundle!r} is not among them (add a "
                                "volgan.evaluation.registry.METHODS entry, or run its configs/evaluate.yaml)")
    return METHODS[bundle]
