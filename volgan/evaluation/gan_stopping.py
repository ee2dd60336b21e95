"""A GAN trained to a stated criterion, not a fixed number of iterations (issue #20 item 4), for the generators that
make (image, mask) pairs without a paired target (P5's ``G(z)``, P4's ``G(x_j, z)``): every ``interval``
iterations the generator's samples are compared with held-out real pairs by a Gaussian-kernel MMD^2 in the feature
space of a seeded random CNN (``RandomConvFeatures``: no download, the same extractor on every machine); the curve
goes to ``gan_val_curve.csv``, the best generator to ``model_g_best.pt``, and training stops ``patience``
validations after the last new minimum, with the best generator restored for what comes next (the U-Net stage).
MM-GAN, whose generator has a paired target, stops on held-out SSIM instead (``val_patience`` of its bundle)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine
from monai.engines import Evaluator

from volgan.config import as_bool
from volgan.data.pairs import to_pair
from volgan.data.transforms import plain_tensor
from volgan.errors import VolganConfigError
from volgan.evaluation.distribution import RandomConvFeatures, gaussian_mmd
from volgan.handlers import BestModelSaver, EarlyStoppingValidation

__all__ = ["SynthesisQualityEvaluator", "GanQualityStopping"]


class SynthesisQualityEvaluator(Evaluator):
    """One run scores the generator behind ``sampler``: the Gaussian MMD^2 (``gaussian_mmd``) between the embedded
    synthetic pairs and the embedded real pairs of ``real_loader``, in ``state.metrics[metric]`` (lower is better;
    0 for identical sets). ``sampler`` is a ``volgan.data.MixedPairsPrepareBatch`` (or its conditional form) with
    ``n_real`` 0: it gets the first batch of ``source_loader`` (P4's generator is conditioned on those slices) and
    is reseeded to ``seed`` before every run, so two scores differ only by the generator's weights.
    A MONAI ``Evaluator`` of one iteration (MONAI's ``ValidationHandler`` drives it); ``val_handlers`` attach to it
    (a ``BestModelSaver``)."""

    def __init__(self, sampler: Any, source_loader: Iterable, real_loader: Iterable, metric: str = "val_mmd",
                 seed: int = 0, feature_seed: int = 0, feature_width: int = 16,
                 device: torch.device | str | None = None, val_handlers: Iterable[Any] = ()):
        super().__init__(device=torch.device(device or "cpu"), val_data_loader=[0], epoch_length=1, decollate=False)
        self.sampler, self.source_loader, self.real_loader = sampler, source_loader, real_loader
        self.metric, self.seed, self.device = metric, int(seed), device
        self.feature_seed, self.feature_width = int(feature_seed), int(feature_width)
        self._features: torch.nn.Module | None = None
        self._real: torch.Tensor | None = None
        for h in val_handlers:
            h.attach(self)

    def features(self, pairs: torch.Tensor) -> torch.Tensor:
        if self._features is None:
            self._features = RandomConvFeatures(self.feature_seed, self.feature_width, in_channels=pairs.shape[1])
        return self._features(pairs.cpu().float())

    def real_features(self) -> torch.Tensor:
        """The embedded held-out real pairs (computed once: they do not change during training)."""
        if self._real is None:
            feats = [self.features(to_pair(plain_tensor(b["image"]), plain_tensor(b["label"])))
                     for b in self.real_loader]
            if not feats:
                raise VolganConfigError("--gan_val_interval needs held-out slices to score the generator against and "
                                        "the validation set is empty: pass --val_dataset_dir (or a val_fraction > 0)")
            self._real = torch.cat(feats)
        return self._real

    @torch.no_grad()
    def _iteration(self, engine: Engine, batchdata: Any) -> dict:
        self.sampler.reseed(self.seed)
        source = next(iter(self.source_loader))
        image, label = self.sampler(source, device=self.device)
        synthetic = self.features(to_pair(image, label))
        self.state.metrics[self.metric] = gaussian_mmd(synthetic, self.real_features())
        return {}


class GanQualityStopping:
    """Attach to a GAN trainer: validate the generator with a ``SynthesisQualityEvaluator`` every ``interval``
    iterations, write each score to ``output_dir/gan_val_curve.csv`` and the best generator (plain state dict) to
    ``output_dir/model_g_best.pt``; with ``patience`` > 0 stop ``patience`` validations after the last new minimum
    and, when the stage ends (stopped or at its last iteration), load the best generator back. ``interval`` 0
    attaches nothing (the paper's fixed iteration count). Its state (patience counter, best score) belongs in the
    stage's checkpoint (``state_dict``), so a resumed run stops where an uninterrupted one would."""

    def __init__(self, generator: torch.nn.Module, sampler: Any, source_loader: Iterable, real_loader: Iterable,
                 output_dir: str | os.PathLike, interval: int = 0, patience: int = 0, metric: str = "val_mmd",
                 seed: int = 0, device: torch.device | str | None = None, enabled: Any = True):
        interval = int(interval)
        out = Path(output_dir)
        self.saver = BestModelSaver(generator, out / "model_g_best.pt", metric=metric, mode="min")
        self.evaluator = SynthesisQualityEvaluator(sampler, source_loader, real_loader, metric=metric, seed=seed,
                                                   device=device, val_handlers=[self.saver])
        self.stopping = EarlyStoppingValidation(self.evaluator, max(interval, 1), metric=metric, mode="min",
                                                patience=int(patience), curve_path=out / "gan_val_curve.csv",
                                                enabled=as_bool(enabled) and interval > 0, restore_best=self.saver)

    def attach(self, engine: Engine) -> None:
        self.stopping.attach(engine)

    def state_dict(self) -> dict[str, Any]:
        return {"early_stop": self.stopping.state_dict(), "best": self.saver.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.stopping.load_state_dict(state.get("early_stop", {}))
        if "best" in state:
            self.saver.load_state_dict(state["best"])
