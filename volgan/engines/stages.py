"""The training run every bundle's ``train#trainer`` is: stages run in order, each resumable from its own
checkpoints, so multi-stage methods (P3 pre-train -> fine-tune, P4/P5 GAN -> segmentor) hold no control flow in
their configs and single-stage ones (P1, P2) are driven the same way."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine

from volgan.config import as_bool
from volgan.distributed import is_rank_zero
from volgan.engines.base import NonFiniteLossError
from volgan.errors import VolganConfigError
from volgan.handlers import CheckpointHandler, EpochSeed, NonFiniteStateError, ResumeFromLatest, latest_checkpoint
from volgan.io import OutputLock

__all__ = ["Stage", "StagedTraining"]

logger = logging.getLogger(__name__)


class Stage:
    """One stage of a training run.

    Args:
        name: the stage's name (logs, MLflow prefix; e.g. ``gan``, ``finetune``).
        trainer: its ignite/MONAI engine.
        save_dict: the resumable state (networks, optimisers, schedulers, scalers, pool, best-model trackers,
            the trainer itself for its counters), saved as ``checkpoint_<epoch>.pt``.
        enabled: whether the stage runs (a method's modes decide this in Python, e.g. ``GanPretrainModes``).
        subdir: checkpoint folder below the run's ``output_dir`` (``""``: ``output_dir`` itself).
        validator: the stage's evaluator, if it has one (its metrics reach the tracking as ``validator_name``,
            default ``<name>_val``).
        epoch_level_validation: whether ``validator`` runs per epoch (else per iteration; for the tracking step).
    """

    def __init__(self, name: str, trainer: Engine, save_dict: Mapping[str, Any], enabled: Any = True,
                 subdir: str | None = None, validator: Engine | None = None, validator_name: str | None = None,
                 epoch_level_validation: bool = True):
        self.name, self.trainer, self.save_dict = str(name), trainer, dict(save_dict)
        self.enabled = as_bool(enabled)
        self.subdir = self.name if subdir is None else str(subdir)
        self.validator, self.epoch_level_validation = validator, bool(epoch_level_validation)
        self.validator_name = validator_name or f"{self.name}_val"

    def __repr__(self) -> str:
        return f"Stage({self.name!r}, enabled={self.enabled}, subdir={self.subdir!r})"


class StagedTraining:
    """The ``train#trainer`` of every volgan bundle: runs the enabled ``stages`` in order.

    Before its first run each stage resumes from the newest ``checkpoint_<epoch>.pt`` in its folder (when
    ``resume``) and saves its full state there every ``save_interval`` epochs, keeping ``n_saved`` (on rank 0
    only under DDP). A finished stage resumes as finished and is skipped by ignite, so re-running a killed
    multi-stage training continues where it stopped. ``tracking`` (``volgan.tracking.MLflowTracking``) gets
    every stage's trainer and validator. Determinism is the bundle's ``initialize`` (before networks exist).

    Args:
        stages: the ``Stage`` list, in order.
        output_dir: the run's folder.
        max_epochs: the bundle's ``max_epochs`` (MONAI's train workflow property; the stages' own epoch counts
            are their trainers').
        resume, n_saved, save_interval: checkpointing of every stage.
        overwrite: with ``resume`` false, a folder holding an earlier run's checkpoints is refused unless
            ``overwrite`` (then those checkpoints are deleted first), so two runs never mix in one folder.
        tracking: optional experiment tracking with ``attach(trainers, evaluators, optimizers)`` and ``close()``.
        seed: with a seed, every epoch of every stage starts from RNG states derived from (seed, stage, epoch)
            (``volgan.handlers.EpochSeed``), so a killed and resumed run equals an uninterrupted one.

    One run owns ``output_dir`` while it trains (``volgan.io.OutputLock``): a second training into it is refused
    with one line naming the owner. A NaN/Inf that stops a stage is reported with the stage's last good checkpoint.
    """

    def __init__(self, stages: Sequence[Stage], output_dir: str | os.PathLike, max_epochs: int = 1,
                 resume: Any = True, n_saved: int = 3, save_interval: int = 1, tracking: Any = None,
                 overwrite: Any = False, seed: int | None = None):
        if not stages:
            raise ValueError("a training run needs at least one stage")
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.stages, self.output_dir = list(stages), Path(output_dir)
        self.max_epochs, self.resume = int(max_epochs), as_bool(resume)
        self.n_saved, self.save_interval, self.tracking = int(n_saved), int(save_interval), tracking
        self.overwrite = as_bool(overwrite)
        self.seed = None if seed is None else int(seed)
        self._attached: set[str] = set()
        self.last: Stage | None = None
        #: stage name -> the checkpoint it resumed from (``None``: it started fresh)
        self.resumed_from: dict[str, Path | None] = {}

    @property
    def enabled_stages(self) -> list[Stage]:
        return [s for s in self.stages if s.enabled]

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    @property
    def state(self) -> Any:
        """The engine state of the stage that ran last (what tools reading ``trainer.state`` want)."""
        return (self.last or self.stages[-1]).trainer.state

    def checkpoint_dir(self, stage: Stage) -> Path:
        return self.output_dir / stage.subdir if stage.subdir else self.output_dir

    def attach(self, stage: Stage) -> None:
        """Resume and checkpointing for ``stage`` (once)."""
        if stage.name in self._attached:
            return
        self._attached.add(stage.name)
        folder = self.checkpoint_dir(stage)
        earlier = latest_checkpoint(folder)
        if earlier is not None and not self.resume:
            if not self.overwrite:
                raise VolganConfigError(f"{folder} holds checkpoints of an earlier run ({earlier.name}): pass "
                                        "--resume true to continue it, or --overwrite true to start over (its "
                                        "checkpoints are deleted)")
            if is_rank_zero():
                for old in folder.glob("checkpoint_*.pt"):
                    old.unlink()
        if self.seed is not None:
            loader = getattr(stage.trainer, "data_loader", None)
            EpochSeed(self.seed, stage.name, getattr(loader, "dataset", None)).attach(stage.trainer)
        resume = ResumeFromLatest(folder, stage.save_dict, self.resume, map_location=_device_of(stage.trainer))
        resume.attach(stage.trainer)
        self.resumed_from[stage.name] = resume.loaded_from
        if is_rank_zero():
            CheckpointHandler(folder, stage.save_dict, n_saved=self.n_saved,
                              save_interval=self.save_interval).attach(stage.trainer)

    def _track(self) -> None:
        if self.tracking is None:
            return
        trainers = {s.name: s.trainer for s in self.enabled_stages}
        evaluators = {s.validator_name: (s.validator, s.trainer) for s in self.enabled_stages if s.validator}
        optimizers: dict[str, torch.optim.Optimizer] = {}
        for s in self.enabled_stages:
            optimizers.update(getattr(s.trainer, "optimizers", None) or {})
        epoch_level = all(s.epoch_level_validation for s in self.enabled_stages if s.validator)
        self.tracking.attach(trainers, evaluators, optimizers, epoch_level_validation=epoch_level)

    def run(self) -> None:
        """Run every enabled stage in order (each resumable), then close the tracking."""
        with OutputLock(self.output_dir, enabled=is_rank_zero()):
            self._track()
            try:
                for stage in self.enabled_stages:
                    self.attach(stage)
                    logger.info("stage %s", stage.name)
                    self.last = stage
                    try:
                        stage.trainer.run()
                    except (NonFiniteLossError, NonFiniteStateError) as e:
                        last = latest_checkpoint(self.checkpoint_dir(stage))
                        where = "" if "last good checkpoint" in str(e) else \
                            f" (last good checkpoint: {last if last else 'none yet'})"
                        raise type(e)(f"stage {stage.name}: {e}{where}") from e
            finally:
                if self.tracking is not None:
                    self.tracking.close()


def _device_of(engine: Engine) -> Any:
    state = getattr(engine, "state", None)
    return getattr(state, "device", None) or "cpu"
