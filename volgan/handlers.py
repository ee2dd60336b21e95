"""Ignite/MONAI handlers volgan adds to MONAI's: atomic checkpoints (write, then prune), resume, network export,
best-by-validation export that survives a resume, one training monitor (MONAI's stats and TensorBoard handlers plus
GAN image grids, GAN health and progress), early stopping on an epoch mean (on MONAI's ``EarlyStopHandler``).
Every handler that writes does so on rank 0 only under DDP."""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import re
import sys
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, ProgressBar
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import (
    CheckpointLoader,
    EarlyStopHandler,
    StatsHandler,
    TensorBoardStatsHandler,
    ValidationHandler,
)
from monai.data.utils import set_rnd
from torch.utils.tensorboard import SummaryWriter

from volgan.config import as_bool
from volgan.distributed import is_rank_zero, rank
from volgan.errors import VolganError
from volgan.io import atomic_torch_save, safe_torch_load, save_weights

__all__ = [
    "AtomicDiskSaver",
    "NonFiniteStateError",
    "non_finite_entries",
    "CheckpointHandler",
    "ResumeFromLatest",
    "ExportNetwork",
    "BestModelSaver",
    "EnsureBestModel",
    "EarlyStoppingValidation",
    "StagedOutputs",
    "TensorBoardGanHandler",
    "ProgressHandler",
    "TrainingMonitor",
    "EpochMeanEarlyStop",
    "GanHealthMonitor",
    "latest_checkpoint",
    "scalar_outputs",
    "loss_output",
    "metric_score",
    "summary_writer",
    "lower_is_better",
    "epoch_seed",
    "EpochSeed",
]

logger = logging.getLogger(__name__)
_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")


class AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler writing through a temp file, fsync and rename: a checkpoint is never truncated.

    Ignite asks to remove the oldest checkpoint *before* it writes the new one; here the removal waits until the
    new file is complete, so at least one complete checkpoint exists at every moment (also with ``n_saved=1``).
    Temp files left by a killed run (``.<name>.*.tmp``) are removed when the saver is created.
    """

    def __init__(self, dirname: str | os.PathLike):
        self.dirname = Path(dirname)
        self.dirname.mkdir(parents=True, exist_ok=True)
        self._to_remove: list[str] = []
        for stale in self.dirname.glob(".checkpoint_*.tmp"):
            logger.warning("removing %s, left by an interrupted checkpoint write", stale)
            stale.unlink(missing_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        bad = non_finite_entries(checkpoint)
        if bad:
            last = latest_checkpoint(self.dirname)
            raise NonFiniteStateError(
                f"{self.dirname / filename} not written: non-finite values in {', '.join(bad[:4])}"
                f"{' ...' if len(bad) > 4 else ''}; the last good checkpoint is "
                f"{last if last else 'none'}: lower the learning rate(s) and resume from it")
        atomic_torch_save(dict(checkpoint), self.dirname / filename)
        pending, self._to_remove = self._to_remove, []
        for old in pending:
            if old != filename:
                (self.dirname / old).unlink(missing_ok=True)

    def remove(self, filename: str) -> None:
        self._to_remove.append(filename)


class NonFiniteStateError(VolganError, RuntimeError):
    """A network, optimiser or metric became NaN/Inf: nothing of it is saved or exported (issue #18)."""


def non_finite_entries(state: Any, prefix: str = "") -> list[str]:
    """The dotted names of the floating-point tensors (and floats) in a (nested) state dict that hold NaN or Inf."""
    out: list[str] = []
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and state.numel() and not bool(torch.isfinite(state).all()):
            out.append(prefix or "tensor")
    elif isinstance(state, float):
        if not math.isfinite(state) and not prefix.endswith(("best", "scale")):
            out.append(prefix)
    elif isinstance(state, Mapping):
        for k, v in state.items():
            out += non_finite_entries(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out += non_finite_entries(v, f"{prefix}[{i}]")
    return out


def latest_checkpoint(save_dir: str | os.PathLike) -> Path | None:
    """The ``checkpoint_<epoch>.pt`` with the highest epoch in ``save_dir`` (``None`` if there is none)."""
    d = Path(save_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name))]
    return max(found)[1] if found else None


class CheckpointHandler:
    """Saves the full resumable state every ``save_interval`` epochs as ``checkpoint_<epoch>.pt`` and keeps the
    last ``n_saved`` (older ones are deleted only after the new one is complete).

    ``save_dict`` maps names to objects with ``state_dict``/``load_state_dict`` (networks, optimisers, scalers,
    schedulers, image pool, best-model savers, the trainer itself for epoch/iteration counters). Files are
    written atomically. Does nothing on ranks other than 0.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: Mapping[str, Any], n_saved: int = 3,
                 save_interval: int = 1):
        self.save_dir = Path(save_dir)
        self.save_dict = {k: v for k, v in save_dict.items() if v is not None}
        self.n_saved, self.save_interval = int(n_saved), max(int(save_interval), 1)

    def attach(self, engine: Engine) -> None:
        if not is_rank_zero():
            return
        saver = AtomicDiskSaver(self.save_dir)
        last = Checkpoint(self.save_dict, saver, filename_prefix="", n_saved=self.n_saved,
                          global_step_transform=lambda e, _: e.state.epoch)
        last._fname_prefix = "checkpoint"  # noqa: SLF001 - name files checkpoint_<epoch>.pt whatever the dict holds
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), last)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.prune)

    def prune(self, engine: Engine | None = None) -> None:
        """Keep the newest ``n_saved`` ``checkpoint_<epoch>.pt`` of the folder, also those an earlier (killed or
        finished) run left: called only after a new checkpoint was written in full."""
        found = sorted((int(m.group(1)), f) for f in self.save_dir.glob("checkpoint_*.pt")
                       if (m := re.fullmatch(r"checkpoint_(\d+)\.pt", f.name)))
        for _, f in found[: max(len(found) - self.n_saved, 0)]:
            f.unlink(missing_ok=True)


class ResumeFromLatest:
    """On attach, load the newest ``checkpoint_<epoch>.pt`` of ``save_dir`` (if any and ``enabled``) into
    ``load_dict`` with MONAI's ``CheckpointLoader`` (weights-only), so training continues its epoch count,
    optimiser, scaler, scheduler and pool states. ``path`` names a checkpoint explicitly instead.
    """

    def __init__(self, save_dir: str | os.PathLike, load_dict: Mapping[str, Any], enabled: Any = True,
                 path: str | os.PathLike | None = None, map_location: Any = None):
        self.save_dir, self.load_dict = save_dir, {k: v for k, v in load_dict.items() if v is not None}
        self.enabled, self.path, self.map_location = as_bool(enabled), path, map_location
        self.loaded_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        path = Path(self.path) if self.path else latest_checkpoint(self.save_dir)
        if path is None:
            return
        safe_torch_load(path)  # readable and weights-only, or a VolganDataError naming it
        logger.info("resuming from %s", path)
        self.loaded_from = path
        CheckpointLoader(load_path=str(path), load_dict=dict(self.load_dict), map_location=self.map_location).attach(engine)


class ExportNetwork:
    """Write the network's weights to ``path`` as a plain state dict, atomically, after every ``every`` epochs and
    at the end (``models/model.pt``: what inference, MONAI Label and the model zoo load), with the sidecar
    ``model.json`` (the network's definition and ``meta``: the conventions it was trained with). Rank 0 only."""

    def __init__(self, network: torch.nn.Module, path: str | os.PathLike, every: int = 1,
                 meta: Mapping[str, Any] | None = None):
        self.network, self.path, self.every = network, Path(path), max(int(every), 1)
        self.meta = dict(meta or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        if not is_rank_zero():
            return
        bad = non_finite_entries(self.network.state_dict())
        if bad:
            raise NonFiniteStateError(f"{self.path} not written: the network's weights are non-finite "
                                      f"({', '.join(bad[:3])}); lower the learning rate(s) and resume")
        save_weights(self.network, self.path, self.meta)


def _first_item(output: Any) -> Any:
    """An engine output as one dict: the first item of a decollated list (MONAI repeats the loss in every item)."""
    return (output[0] if output else {}) if isinstance(output, (list, tuple)) else output


def scalar_outputs(output: Any) -> dict[str, float]:
    """The 0-d entries of an engine's output dict (losses, mean scores) as floats, for stats handlers; a decollated
    list gives its first item's; anything else none."""
    output = _first_item(output)
    if not isinstance(output, Mapping):
        return {}
    return {str(k): float(v.detach()) for k, v in output.items() if isinstance(v, torch.Tensor) and v.ndim == 0}


def loss_output(output: Any) -> float:
    """``output["loss"]`` of a MONAI ``SupervisedTrainer`` as a float, whether or not it decollates its output
    (``from_engine(["loss"])`` gives a one-element tuple for an undecollated dict, which stats handlers ignore)."""
    loss = _first_item(output)["loss"]
    return float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)


def _mid_slice(x: torch.Tensor, channel: int = 0) -> torch.Tensor:
    """First item's channel as a 2D image (mid axial slice for 3D), scaled to [0, 1]."""
    t = x[0, channel].detach().float().cpu()
    if t.ndim == 3:
        t = t[:, :, t.shape[2] // 2]
    lo, hi = float(t.min()), float(t.max())
    return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)


class TensorBoardGanHandler:
    """TensorBoard: learning rates every ``scalar_interval`` iterations and a grid of mid slices
    (condition / real / synthetic / any extra keys) every ``image_interval`` iterations.

    Loss scalars are left to MONAI's ``TensorBoardStatsHandler`` (with ``output_transform=scalar_outputs``).

    Args:
        log_dir: TensorBoard folder (or pass ``summary_writer``).
        optimizers: name -> optimiser whose lr is logged as ``lr/<name>``.
        image_keys: output keys shown side by side; a one-hot condition is shown as its argmax.
    """

    def __init__(self, log_dir: str | os.PathLike | None = None, optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
                 image_keys: Sequence[str] = ("cond", "real", "fake"), scalar_interval: int = 10,
                 image_interval: int = 50, summary_writer: Any = None):
        self.writer = summary_writer if summary_writer is not None else SummaryWriter(log_dir=str(log_dir))
        self.optimizers = dict(optimizers or {})
        self.image_keys, self.scalar_interval, self.image_interval = tuple(image_keys), scalar_interval, image_interval

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=max(self.scalar_interval, 1)), self.log_lr)
        if self.image_keys and self.image_interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.image_interval), self.log_images)
        engine.add_event_handler(Events.COMPLETED, lambda e: self.writer.flush())

    def log_lr(self, engine: Engine) -> None:
        for name, opt in self.optimizers.items():
            self.writer.add_scalar(f"lr/{name}", opt.param_groups[0]["lr"], engine.state.iteration)

    def log_images(self, engine: Engine) -> None:
        out = engine.state.output
        if not isinstance(out, Mapping):
            return
        tiles = []
        for key in self.image_keys:
            x = out.get(key)
            if not isinstance(x, torch.Tensor) or x.ndim < 4:
                continue
            if x.shape[1] > 1:  # one-hot condition -> class index image
                x = x.argmax(1, keepdim=True).float()
            tiles.append(_mid_slice(x))
        if tiles:
            h = max(t.shape[0] for t in tiles)
            tiles = [torch.nn.functional.pad(t, (0, 0, 0, h - t.shape[0])) for t in tiles]
            grid = torch.cat(tiles, dim=1)
            self.writer.add_image("/".join(self.image_keys), grid.T.flip(0)[None], engine.state.iteration)


class ProgressHandler:
    """Ignite ``ProgressBar`` on interactive terminals only (``enabled="auto"``), showing the scalar losses."""

    def __init__(self, enabled: Any = "auto", output_transform: Callable | None = scalar_outputs, desc: str | None = None):
        self.enabled, self.output_transform, self.desc = enabled, output_transform, desc

    def is_enabled(self) -> bool:
        if isinstance(self.enabled, str) and self.enabled.lower() == "auto":
            return sys.stderr.isatty() and not os.environ.get("CI")
        return as_bool(self.enabled)

    def attach(self, engine: Engine) -> None:
        if not self.is_enabled() or not is_rank_zero():
            return

        kwargs = {"desc": self.desc} if self.desc else {}
        ProgressBar(persist=True, **kwargs).attach(engine, output_transform=self.output_transform)


class EpochMeanEarlyStop(EarlyStopHandler):
    """MONAI's ``EarlyStopHandler`` on the epoch mean of a training output, lower is better (P2 Sec. 4.1: stop
    when the segmentation loss has not improved for ~5 epochs). Epochs whose outputs lack ``key`` (a phase
    without segmentor steps) are not counted. ``patience <= 0`` disables it."""

    def __init__(self, key: str = "s_loss", patience: int = 5, min_delta: float = 0.0):
        self.key = key
        self._sum, self._n = 0.0, 0
        super().__init__(patience=max(int(patience), 1), score_function=self._score, min_delta=float(min_delta),
                         epoch_level=True)
        self.enabled = int(patience) > 0

    def _score(self, engine: Engine) -> float:
        mean, self._sum, self._n = self._sum / self._n, 0.0, 0
        return -mean

    def state_dict(self) -> dict[str, Any]:
        """Patience counter and best score (in the stage's checkpoint, so a resumed run stops when an
        uninterrupted one would)."""
        return _early_stop_state(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _load_early_stop_state(self, state)

    def _accumulate(self, engine: Engine) -> None:
        out = engine.state.output
        if isinstance(out, Mapping) and self.key in out:
            self._sum += float(out[self.key])
            self._n += 1

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        self.set_trainer(engine)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self._n:  # an epoch that reported the key
            super().__call__(engine)


def metric_score(metric: str, mode: str = "max") -> Callable[[Engine], float]:
    """``engine -> score`` for MONAI's ``EarlyStopHandler`` / checkpoint savers (higher is better): the metric
    itself (``mode="max"``, e.g. Dice) or its negative (``"min"``, e.g. a validation loss)."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    sign = -1.0 if mode == "min" else 1.0

    def score(engine: Engine) -> float:
        return sign * float(engine.state.metrics[metric])

    return score


def lower_is_better(current: float, previous: float) -> bool:
    """``metric_cmp_fn`` of a MONAI evaluator whose key metric is a loss."""
    return current < previous


class GanHealthMonitor:
    """Warn (log) about failure modes of GAN training from simple running statistics (every ``interval`` iterations):

    - discriminator domination: the mean D score gap ``d_real - d_fake`` above ``gap_threshold`` (LSGAN targets
      1 / 0, so a gap near 1 means D separates real from fake perfectly and G gets little signal);
    - mode collapse: the standard deviation of the generated batch (``fake``) below ``std_threshold``.

    A condition must hold for ``patience`` consecutive checks before it is reported; reports are logged once per
    episode and counted in ``engine.state.gan_warnings``.
    """

    def __init__(self, interval: int = 10, patience: int = 5, gap_threshold: float = 0.9, std_threshold: float = 1e-3,
                 real_key: str = "d_real", fake_score_key: str = "d_fake", fake_key: str = "fake"):
        self.interval, self.patience = max(int(interval), 1), max(int(patience), 1)
        self.gap_threshold, self.std_threshold = float(gap_threshold), float(std_threshold)
        self.keys = (real_key, fake_score_key, fake_key)
        self.counts = {"discriminator domination": 0, "mode collapse": 0}

    def attach(self, engine: Engine) -> None:
        engine.state.gan_warnings = []
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        if not isinstance(out, Mapping):
            return
        real_key, fake_score_key, fake_key = self.keys
        checks = {}
        if real_key in out and fake_score_key in out:
            checks["discriminator domination"] = float(out[real_key]) - float(out[fake_score_key]) > self.gap_threshold
        if isinstance(out.get(fake_key), torch.Tensor):
            checks["mode collapse"] = float(out[fake_key].float().std()) < self.std_threshold
        for name, bad in checks.items():
            self.counts[name] = self.counts[name] + 1 if bad else 0
            if self.counts[name] == self.patience:
                msg = f"iteration {engine.state.iteration}: possible {name} ({self.patience} checks in a row)"
                logger.warning(msg)
                engine.state.gan_warnings.append(msg)


class BestModelSaver:
    """Attach to an evaluator: after each run, export the network (plain state dict, atomically) to ``path`` when
    ``state.metrics[metric]`` improves (``mode="min"`` for losses, ``"max"`` for Dice/SSIM). A non-finite value
    never counts as an improvement. The best value is state (``state_dict``/``load_state_dict``): put the saver
    in the training checkpoint and a resumed run keeps the best model of the run before it (MONAI's
    ``CheckpointSaver(save_key_metric=True)`` deletes the old best before writing the new one and cannot keep a
    plain state dict together with its tracking state, hence this small handler)."""

    def __init__(self, network: torch.nn.Module, path: str | os.PathLike, metric: str = "val_loss", mode: str = "min",
                 meta: Mapping[str, Any] | None = None):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.export, self.metric, self.mode = ExportNetwork(network, path, meta=meta), metric, mode
        self.best = float("inf") if mode == "min" else float("-inf")
        self.best_epoch: int | None = None

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.COMPLETED, self)

    def improved(self, value: float) -> bool:
        return math.isfinite(value) and ((value < self.best) if self.mode == "min" else (value > self.best))

    def __call__(self, evaluator: Engine) -> None:
        value = float(evaluator.state.metrics[self.metric])
        bad = non_finite_entries(self.export.network.state_dict())
        if bad or not math.isfinite(value):
            what = (f"the network's weights are non-finite ({', '.join(bad[:3])})" if bad else
                    f"validation {self.metric} is non-finite ({value}: the network's outputs are NaN/Inf)")
            raise NonFiniteStateError(f"{what}; not kept as the best model: lower the learning rate(s) and resume")
        if self.improved(value):
            self.best = value
            self.best_epoch = getattr(evaluator.state, "epoch", None)
            self.export()

    def state_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "mode": self.mode, "best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("metric", self.metric) != self.metric or state.get("mode", self.mode) != self.mode:
            logger.warning("best-model state for %s/%s ignored: this run tracks %s/%s", state.get("metric"),
                           state.get("mode"), self.metric, self.mode)
            return
        self.best = float(state["best"])


class EnsureBestModel:
    """Attach to a trainer validated every N iterations: when it completes without any best model written at
    ``path`` (training shorter than the validation interval), validate once, so the best-model file always exists
    after training (P4/P5 export their segmentor at its best validation loss)."""

    def __init__(self, validator: Engine, path: str | os.PathLike):
        self.validator, self.path = validator, Path(path)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.path.exists():
            self.validator.run()


class EarlyStoppingValidation:
    """Attach to a trainer: validate with ``validator`` every ``interval`` iterations (MONAI's ``ValidationHandler``),
    stop the trainer ``patience_iterations`` after the last new best ``metric`` (MONAI's ``EarlyStopHandler`` on
    the validator, ``mode`` "min" for losses), and validate once at the end when ``best_model_path`` was never
    written (``EnsureBestModel``). P5's schedule (and P4's segmentor): validate every 100 iterations, stop 3000
    iterations after the last minimum."""

    def __init__(self, validator: Engine, interval: int, patience_iterations: int,
                 best_model_path: str | os.PathLike, metric: str = "val_loss", mode: str = "min"):
        self.validator, self.interval = validator, max(int(interval), 1)
        self.patience = max(1, int(patience_iterations) // self.interval)
        self.best_model_path, self.metric, self.mode = best_model_path, metric, mode
        self.stopper = EarlyStopHandler(patience=self.patience, score_function=metric_score(self.metric, self.mode),
                                        epoch_level=True)

    def attach(self, engine: Engine) -> None:
        ValidationHandler(interval=self.interval, validator=self.validator, epoch_level=False).attach(engine)
        self.stopper.set_trainer(engine)
        self.stopper.attach(self.validator)
        EnsureBestModel(self.validator, self.best_model_path).attach(engine)

    def state_dict(self) -> dict[str, Any]:
        """Patience counter and best score (in the stage's checkpoint: a resumed run stops when an uninterrupted
        one would)."""
        return _early_stop_state(self.stopper)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _load_early_stop_state(self.stopper, state)


def _early_stop_state(stopper: EarlyStopHandler) -> dict[str, Any]:
    h = getattr(stopper, "_handler", None)  # ignite's EarlyStopping, made when the trainer is known
    return {"counter": int(h.counter) if h else 0,
            "best_score": None if h is None or h.best_score is None else float(h.best_score)}


def _load_early_stop_state(stopper: EarlyStopHandler, state: Mapping[str, Any]) -> None:
    h = getattr(stopper, "_handler", None)
    if h is None:  # disabled (patience <= 0): nothing counts
        return
    h.counter = int(state.get("counter", 0))
    h.best_score = state.get("best_score")


_WRITERS: dict[str, SummaryWriter] = {}


def summary_writer(log_dir: str | os.PathLike) -> SummaryWriter:
    """One TensorBoard ``SummaryWriter`` per folder and process, so the stages of a run log into one event file."""
    key = os.path.abspath(str(log_dir))
    if key not in _WRITERS:
        _WRITERS[key] = SummaryWriter(log_dir=key)
    return _WRITERS[key]


class StagedOutputs:
    """Attach to an evaluator that writes its outputs into ``staging`` (a hidden folder inside ``output_dir``): when
    the run completes they are moved into ``output_dir``, when it fails the staging folder is removed, so a bad
    input late in the list never leaves the earlier outputs behind (all or nothing)."""

    def __init__(self, staging: str | os.PathLike, output_dir: str | os.PathLike):
        self.staging, self.output_dir = Path(staging), Path(output_dir)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.COMPLETED, self.commit)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.abort)

    def start(self, engine: Engine | None = None) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)  # what a killed run left there is not this run's output
        self.staging.mkdir(parents=True)

    def commit(self, engine: Engine | None = None) -> None:
        for f in sorted(self.staging.iterdir()) if self.staging.is_dir() else []:
            os.replace(f, self.output_dir / f.name)
        shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self, engine: Engine, e: BaseException) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        raise e


class TrainingMonitor:
    """What a person watching a stage needs, attached in one go (rank 0 only): MONAI's ``StatsHandler`` (log every
    ``log_interval`` iterations) and ``TensorBoardStatsHandler`` (scalars), ``TensorBoardGanHandler`` (learning
    rates of ``optimizers``; with ``image_keys`` a grid of mid slices every ``image_interval`` iterations), the
    ``GanHealthMonitor`` (``gan_health``), and a progress bar on terminals.

    Args:
        tag: the stage's name in logs (and TensorBoard's tag for a single-number output: ``<tag>_loss``).
        log_dir: TensorBoard folder (the writer is made at attach, on rank 0).
        output_transform: engine output -> scalars (``scalar_outputs``: every 0-d entry; ``loss_output``: the loss).
    """

    def __init__(self, tag: str, log_dir: str | os.PathLike, log_interval: int = 10, image_interval: int = 50,
                 optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
                 image_keys: Sequence[str] | None = None, gan_health: bool = False,
                 output_transform: Callable = None, progress: Any = "auto"):
        self.tag, self.log_dir, self.log_interval = str(tag), log_dir, max(int(log_interval), 1)
        self.image_interval, self.optimizers = int(image_interval), dict(optimizers or {})
        self.image_keys = tuple(image_keys) if image_keys else None
        self.gan_health, self.progress = as_bool(gan_health), progress
        self.output_transform = output_transform or scalar_outputs
        self.writer = None

    def attach(self, engine: Engine) -> None:
        if not is_rank_zero():
            return
        self.writer = summary_writer(self.log_dir)
        StatsHandler(tag_name=self.tag, iteration_log=self.log_interval,
                     output_transform=self.output_transform).attach(engine)
        TensorBoardStatsHandler(summary_writer=self.writer, iteration_log=self.log_interval, tag_name=f"{self.tag}_loss",
                                output_transform=self.output_transform).attach(engine)
        TensorBoardGanHandler(optimizers=self.optimizers, image_keys=self.image_keys or (),
                              scalar_interval=self.log_interval,
                              image_interval=self.image_interval if self.image_keys else 0,
                              summary_writer=self.writer).attach(engine)
        if self.gan_health:
            GanHealthMonitor(interval=self.log_interval).attach(engine)
        ProgressHandler(self.progress).attach(engine)


def epoch_seed(seed: int, *keys: Any) -> int:
    """A 32-bit seed derived from ``seed`` and ``keys`` (a stage name, an epoch, a rank ...) by numpy's
    ``SeedSequence``: distinct keys give independent streams."""
    words = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(k).encode()) if not isinstance(k, int) else int(k) & 0xFFFFFFFF
                                        for k in keys]
    return int(np.random.SeedSequence(words).generate_state(1)[0])


class EpochSeed:
    """Reseed at the start of every epoch, from ``(seed, tag, epoch, rank)``: torch (CPU and CUDA), numpy, Python's
    ``random``, the random transforms of ``dataset`` (MONAI's ``set_rnd``), and the private noise of the engine and
    of its ``prepare_batch`` (anything with a ``reseed(seed)`` method: the WGAN-GP trainers, the mixing batches).
    An epoch's randomness (data order, crops and augmentation, dropout, noise) then depends on its number only, not
    on what ran before it, so a run killed and resumed from its last checkpoint trains exactly as an uninterrupted
    one (issue #18). Ignite makes the epoch's data iterator (and its workers' seeds) after ``EPOCH_STARTED``, so
    the data order is covered too.
    """

    def __init__(self, seed: int, tag: str = "", dataset: Any = None):
        self.seed, self.tag, self.dataset = int(seed), str(tag), dataset

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        s = epoch_seed(self.seed, self.tag, int(engine.state.epoch), rank())
        torch.manual_seed(s)  # seeds every CUDA device too
        np.random.seed(s)
        random.seed(s)
        if self.dataset is not None:
            set_rnd(self.dataset, s)
        for i, owner in enumerate((engine, getattr(engine, "prepare_batch", None))):
            if callable(getattr(owner, "reseed", None)):
                owner.reseed(epoch_seed(s, "noise", i))
