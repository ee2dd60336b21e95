"""Ignite/MONAI handlers volgan adds to MONAI's: atomic checkpoints (write, then prune), resume, network export,
best-by-validation export that survives a resume, one training monitor (MONAI's stats and TensorBoard handlers plus
GAN image grids, GAN health and progress), early stopping on an epoch mean (on MONAI's ``EarlyStopHandler``).
Every handler that writes does so on rank 0 only under DDP."""

from __future__ import annotations

import datetime
import json
import logging
import math
import time
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
from volgan.io import atomic_torch_save, atomic_write_json, load_weights, safe_torch_load, save_weights

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
    "MemoryEstimate",
    "latest_checkpoint",
    "checkpoint_interval",
    "EpochMeans",
    "RunProgress",
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


def checkpoint_interval(iterations: int, data_loader: Any) -> int:
    """``save_interval`` in epochs for a budget counted in iterations (P4/P5's GAN stages): the epochs that hold
    about ``iterations`` iterations of ``data_loader`` (at least 1). With a few slices an epoch is 1-3 iterations,
    and a checkpoint per epoch would write G, D and both optimisers every second or so."""
    try:
        per_epoch = max(len(data_loader), 1)
    except TypeError:  # an iterable without a length: every epoch
        return 1
    return max(1, int(iterations) // per_epoch)


class CheckpointHandler:
    """Saves the full resumable state every ``save_interval`` epochs as ``checkpoint_<epoch>.pt``, and the final
    epoch's when training ends between two of them, and keeps the last ``n_saved`` (older ones are deleted only
    after the new one is complete).

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
        self._checkpoint = last
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.save)
        engine.add_event_handler(Events.TERMINATE, self.save)  # stopped early (also inside an epoch): kept
        engine.add_event_handler(Events.COMPLETED, self.save_final)

    def save(self, engine: Engine) -> None:
        """Write ``checkpoint_<epoch>.pt`` (atomically), then prune the folder to the newest ``n_saved``."""
        self._checkpoint(engine)
        self.prune(engine)

    def save_final(self, engine: Engine) -> None:
        """At the end of training: the last epoch's state, when ``save_interval`` skipped it (so a finished run
        always ends in its final checkpoint, and a resumed one knows it is done). A run stopped early (also inside
        an epoch: early stopping on iterations) was saved at ``Events.TERMINATE``; the stopping handler's state in
        that checkpoint says it stopped, so a resumed run stops at once (``EarlyStoppingValidation``)."""
        state = engine.state
        whole_epoch = not state.epoch_length or state.iteration % state.epoch_length == 0
        if whole_epoch and state.epoch % self.save_interval and latest_checkpoint(self.save_dir) != \
                self.save_dir / f"checkpoint_{state.epoch}.pt":
            self.save(engine)

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
    """TensorBoard: learning rates every ``scalar_interval`` iterations and a grid of mid slices every
    ``image_interval`` iterations, left to right in the order of ``image_keys`` (condition / label map | real |
    synthetic | any extra keys), tagged ``images/<key> | <key> | ...`` with the same order.

    Both are written at the end of every epoch too (images: unless the epoch already logged one, and not more than
    ten times per ``image_interval`` iterations), so a run of short epochs shows its images and learning rates.
    Loss scalars are left to MONAI's ``TensorBoardStatsHandler`` (with ``output_transform=scalar_outputs``) and
    ``EpochMeans``.

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
        self.image_keys, self.scalar_interval = tuple(image_keys), max(int(scalar_interval), 1)
        self.image_interval = int(image_interval)
        self.last_image_iteration: int | None = None

    @property
    def image_tag(self) -> str:
        return "images/" + " | ".join(self.image_keys)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.scalar_interval), self.log_lr)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)
        if self.image_keys and self.image_interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.image_interval), self.log_images)
        engine.add_event_handler(Events.COMPLETED, lambda e: self.writer.flush())

    def epoch_completed(self, engine: Engine) -> None:
        iteration = engine.state.iteration
        if iteration % self.scalar_interval:
            self.log_lr(engine)
        if not self.image_keys or self.image_interval <= 0 or iteration % self.image_interval == 0:
            return
        last = self.last_image_iteration
        in_epoch = last is not None and last > iteration - (engine.state.epoch_length or 0)
        if last is None or (not in_epoch and iteration - last >= max(self.image_interval // 10, 1)):
            self.log_images(engine)

    def log_lr(self, engine: Engine) -> None:
        for name, opt in self.optimizers.items():
            self.writer.add_scalar(f"lr/{name}", opt.param_groups[0]["lr"], engine.state.iteration)

    def grid(self, output: Any) -> torch.Tensor | None:
        """The (1, H, W) image of ``output``'s mid slices, one per present ``image_keys`` entry, left to right,
        each shown with its first array axis across and its second up (the radiological axial view of RAS
        arrays), separated by a one-pixel white line; ``None`` when no key holds an image."""
        if not isinstance(output, Mapping):
            return None
        tiles = []
        for key in self.image_keys:
            x = output.get(key)
            if not isinstance(x, torch.Tensor) or x.ndim < 4:
                continue
            if x.shape[1] > 1:  # one-hot condition -> class index image
                x = x.argmax(1, keepdim=True).float()
            tiles.append(_mid_slice(x).T.flip(0))
        if not tiles:
            return None
        h = max(t.shape[0] for t in tiles)
        line = torch.ones(h, 1)
        tiles = [torch.nn.functional.pad(t, (0, 0, 0, h - t.shape[0])) for t in tiles]
        parts = [p for t in tiles for p in (t, line)][:-1]
        return torch.cat(parts, dim=1)[None]

    def log_images(self, engine: Engine) -> None:
        grid = self.grid(engine.state.output)
        if grid is not None:
            self.writer.add_image(self.image_tag, grid, engine.state.iteration)
            self.last_image_iteration = engine.state.iteration


class ProgressHandler:
    """Ignite ``ProgressBar`` on interactive terminals only (``enabled="auto"``), showing the scalar losses and the
    epoch's ETA. ``persist=False`` clears each epoch's bar when it ends (``TrainingMonitor`` logs an epoch summary
    line instead, so a run of many short epochs does not leave one bar per epoch)."""

    def __init__(self, enabled: Any = "auto", output_transform: Callable | None = scalar_outputs, desc: str | None = None,
                 persist: bool = True):
        self.enabled, self.output_transform, self.desc, self.persist = enabled, output_transform, desc, bool(persist)

    def is_enabled(self) -> bool:
        if isinstance(self.enabled, str) and self.enabled.lower() == "auto":
            return sys.stderr.isatty() and not os.environ.get("CI")
        return as_bool(self.enabled)

    def attach(self, engine: Engine) -> None:
        if not self.is_enabled() or not is_rank_zero():
            return

        kwargs = {"desc": self.desc} if self.desc else {}
        ProgressBar(persist=self.persist, **kwargs).attach(engine, output_transform=self.output_transform)


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


#: WGAN-GP health limits (Gulrajani et al. 2017, lambda 10). The penalty is ``lambda * E[(||grad D|| - 1)^2]``: it
#: stays O(1) (0.1-10) while the critic is near 1-Lipschitz; 100 means gradient norms about 4 where they should be 1
#: (the diverged P5 run of issue #21 logged 641 and 2300-2600). A 1-Lipschitz critic's estimate ``E[D(real)] -
#: E[D(fake)]`` is at most the mean distance between real and synthetic samples, tens for [-1, 1] images in
#: practice; an estimate in the thousands (1459 and ~5000 in issue #21) means the critic has escaped its constraint.
WGAN_MAX_GP = 100.0
WGAN_MAX_WASSERSTEIN = 1000.0


class GanHealthMonitor:
    """Warn about failure modes of GAN training from the trainer's outputs (every ``interval`` iterations), for the
    LSGAN/BCE conditional GANs (P1, P2, P3) and the WGAN-GP trainers (P4, P5) alike:

    - discriminator domination: the mean D score gap ``d_real - d_fake`` above ``gap_threshold`` (LSGAN targets
      1 / 0, so a gap near 1 means D separates real from fake perfectly and G gets little signal);
    - mode collapse (samples collapsing): the spread of a generated batch (``fake_keys``: the std over the batch of
      every voxel, averaged; the plain std for a batch of one) below ``std_threshold`` (0.01: healthy [-1, 1]
      samples spread 0.3 or more; a diverged WGAN-GP's 0.002-0.02);
    - WGAN-GP divergence: the critic's Wasserstein estimate ``|W|`` above ``max_wasserstein`` or the gradient
      penalty above ``max_gp`` (see ``WGAN_MAX_GP``, ``WGAN_MAX_WASSERSTEIN``);
    - non-finite values: a scalar output or a generated batch holding NaN/Inf (reported at the first check).

    A condition must hold for ``patience`` consecutive checks before it is reported; each report is one plain
    sentence with what to try (``lr_options`` names the bundle's learning-rate options), logged once per episode,
    counted in ``engine.state.gan_warnings`` and written to ``report_path`` (JSON, under ``tag``, also when there is
    nothing to report: the run folder's ``gan_health.json``).
    """

    def __init__(self, interval: int = 10, patience: int = 3, gap_threshold: float = 0.9, std_threshold: float = 1e-2,
                 max_wasserstein: float = WGAN_MAX_WASSERSTEIN, max_gp: float = WGAN_MAX_GP,
                 real_key: str = "d_real", fake_score_key: str = "d_fake",
                 fake_keys: str | Sequence[str] = ("fake", "fake_a", "fake_b"), wasserstein_key: str = "wasserstein",
                 gp_key: str = "gp", lr_options: str | None = None, report_path: str | os.PathLike | None = None,
                 tag: str = "gan"):
        self.interval, self.patience = max(int(interval), 1), max(int(patience), 1)
        self.gap_threshold, self.std_threshold = float(gap_threshold), float(std_threshold)
        self.max_wasserstein, self.max_gp = float(max_wasserstein), float(max_gp)
        self.real_key, self.fake_score_key = real_key, fake_score_key
        self.fake_keys = (fake_keys,) if isinstance(fake_keys, str) else tuple(fake_keys)
        self.wasserstein_key, self.gp_key = wasserstein_key, gp_key
        self.lr_options, self.tag = lr_options, str(tag)
        self.report_path = Path(report_path) if report_path else None
        self.counts: dict[str, int] = {}
        self.reports: list[dict[str, Any]] = []
        self.checks_run = 0
        self._fakes: dict[str, torch.Tensor] = {}

    def attach(self, engine: Engine) -> None:
        engine.state.gan_warnings = []
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.remember)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self.write_report)

    def started(self, engine: Engine) -> None:
        """A resumed run keeps the earlier run's reports up to the iteration it resumes from."""
        if not isinstance(getattr(engine.state, "gan_warnings", None), list):
            engine.state.gan_warnings = []
        earlier = self._read_report().get(self.tag, {})
        self.reports = [r for r in earlier.get("warnings", []) if int(r.get("iteration", 0)) <= engine.state.iteration]

    def remember(self, engine: Engine) -> None:
        """Keep the newest generated batches (WGAN-GP trainers output ``fake`` on generator steps only)."""
        out = engine.state.output
        if isinstance(out, Mapping):
            self._fakes.update({k: out[k] for k in self.fake_keys if isinstance(out.get(k), torch.Tensor)})

    def measurements(self, output: Mapping) -> dict[str, tuple[float, float, str]]:
        """check name -> (value, threshold, what it measured) for the checks ``output`` allows."""
        found: dict[str, tuple[float, float, str]] = {}
        if self.real_key in output and self.fake_score_key in output:
            gap = float(output[self.real_key]) - float(output[self.fake_score_key])
            found["discriminator domination"] = (gap, self.gap_threshold, "d_real - d_fake")
        spreads = {k: float(x.detach().float().std(0).mean() if x.shape[0] > 1 else x.detach().float().std())
                   for k, x in self._fakes.items()}
        spreads = {k: v for k, v in spreads.items() if math.isfinite(v)}
        if spreads:
            key = min(spreads, key=spreads.__getitem__)
            found["mode collapse"] = (spreads[key], self.std_threshold, key)
        if self.wasserstein_key in output:
            found["Wasserstein estimate"] = (abs(float(output[self.wasserstein_key])), self.max_wasserstein, "|W|")
        if self.gp_key in output:
            found["gradient penalty"] = (float(output[self.gp_key]), self.max_gp, "GP")
        return found

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        if not isinstance(out, Mapping):
            return
        self.checks_run += 1
        scalars = {str(k): v for k, v in out.items() if isinstance(v, torch.Tensor) and v.ndim == 0}
        bad_keys = [k for k, v in scalars.items() if not bool(torch.isfinite(v.detach()))]
        bad_keys += [k for k, x in self._fakes.items() if not bool(torch.isfinite(x.detach()).all())]
        bad: dict[str, tuple[bool, float, float, str]] = {
            "non-finite values": (bool(bad_keys), float("nan"), float("nan"), ", ".join(bad_keys))}
        for name, (value, limit, what) in self.measurements(out).items():
            low = name == "mode collapse"
            bad[name] = ((value < limit) if low else (value > limit), value, limit, what)
        for name, (is_bad, value, limit, what) in bad.items():
            self.counts[name] = self.counts.get(name, 0) + 1 if is_bad else 0
            if self.counts[name] == (1 if name == "non-finite values" else self.patience):
                self.report(engine, name, value, limit, what)

    def advice(self, name: str, value: float, limit: float, what: str) -> str:
        lr, n = (f" ({self.lr_options})" if self.lr_options else ""), self.patience
        if name == "discriminator domination":
            return (f"possible discriminator domination: D's mean score on real minus synthetic is {value:.3g} "
                    f"(above {limit:g}) for {n} checks in a row, so the generator gets little signal; try a lower "
                    f"discriminator learning rate{lr}, a smaller discriminator, or a larger image pool")
        if name == "mode collapse":
            return (f"possible mode collapse: the synthetic batch '{what}' varies by {value:.3g} (std below "
                    f"{limit:g}) for {n} checks in a row, the samples are (nearly) all alike; try a lower learning "
                    f"rate{lr} and resume from an earlier checkpoint, or more training data")
        if name == "Wasserstein estimate":
            return (f"possible WGAN-GP divergence: the critic's Wasserstein estimate |W| is {value:.4g} (above "
                    f"{limit:g}; a 1-Lipschitz critic keeps it about the real-synthetic distance, tens at most) for "
                    f"{n} checks in a row; lower the learning rate{lr} or raise n_critic (--n_critic 5), keep "
                    "the gradient penalty at lambda 10 (--gp_weight 10), and resume from a checkpoint before it grew")
        if name == "gradient penalty":
            return (f"possible WGAN-GP divergence: the gradient penalty is {value:.4g} (above {limit:g}; with "
                    f"lambda 10 it stays O(1) while the critic's gradient norm is near 1) for {n} checks in a row; "
                    f"lower the learning rate{lr} or raise n_critic (--n_critic 5), and resume from a "
                    "checkpoint before it grew")
        return (f"non-finite values (NaN/Inf) in {what}: training has diverged (such steps are skipped; "
                f"--max_nonfinite_steps of them in a row stop the run); lower the learning rate{lr} and resume "
                "from the last checkpoint")

    def report(self, engine: Engine, name: str, value: float, limit: float, what: str) -> None:
        msg = f"{self.tag} iteration {engine.state.iteration}: {self.advice(name, value, limit, what)}"
        logger.warning(msg)
        engine.state.gan_warnings.append(msg)
        self.reports.append({"iteration": int(engine.state.iteration), "epoch": int(engine.state.epoch),
                             "check": name, "value": value if math.isfinite(value) else None,
                             "threshold": limit if math.isfinite(limit) else None, "message": msg})
        self.write_report(engine)

    def _read_report(self) -> dict[str, Any]:
        if self.report_path is None or not self.report_path.is_file():
            return {}
        try:
            data = json.loads(self.report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def write_report(self, engine: Engine | None = None) -> None:
        """``report_path`` (atomically): this stage's reports under ``tag``, other stages' entries kept."""
        if self.report_path is None or not is_rank_zero():
            return
        data = self._read_report()
        data[self.tag] = {"checks": self.checks_run, "interval": self.interval,
                          "last_iteration": int(engine.state.iteration) if engine is not None else None,
                          "warnings": self.reports}
        atomic_write_json(self.report_path, data)


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

    def restore(self) -> None:
        """Load the best weights written so far back into the network (nothing before the first export). Under DDP
        every rank waits for rank 0's last export first, so all ranks continue with the same weights."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        net = self.export.network
        if self.export.path.is_file():
            load_weights(net, self.export.path, map_location=next(net.parameters()).device)

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
    iterations after the last minimum. MM-GAN's stopping criterion (issue #20): validate the generator's SSIM on
    held-out pairs every ``interval`` epochs, stop after ``patience`` validations without a new best, and record
    the curve."""

    def __init__(self, validator: Engine, interval: int, patience_iterations: int = 0,
                 best_model_path: str | os.PathLike | None = None, metric: str = "val_loss", mode: str = "min",
                 epoch_level: bool = False, patience: int | None = None, curve_path: str | os.PathLike | None = None,
                 enabled: Any = True, restore_best: BestModelSaver | None = None):
        """``epoch_level``: ``interval`` counts epochs (MM-GAN validates per epoch); ``patience``: validations
        without a new best before the stop (default ``patience_iterations // interval``; ``<= 0``: never stop,
        only validate); ``curve_path``: a CSV that gets one ``epoch, iteration, <metric>`` row per validation (the
        curve a stopping criterion is read from); ``enabled`` false (no validation data): attaches nothing;
        ``restore_best``: the validator's ``BestModelSaver``, whose best weights are loaded back into its network
        when the trainer completes (stopped or not; only with ``patience`` > 0), so later stages use the best."""
        self.validator, self.interval = validator, max(int(interval), 1)
        self.epoch_level, self.enabled = bool(epoch_level), as_bool(enabled)
        self.patience = int(patience) if patience is not None else max(1, int(patience_iterations) // self.interval)
        self.best_model_path, self.metric, self.mode = best_model_path, metric, mode
        self.curve_path = None if curve_path is None else Path(curve_path)
        self.restore_best = restore_best
        self.stopped, self._trainer = False, None
        self.stopper = EarlyStopHandler(patience=max(self.patience, 1),
                                        score_function=metric_score(self.metric, self.mode), epoch_level=True)

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        self._trainer = engine
        ValidationHandler(interval=self.interval, validator=self.validator, epoch_level=self.epoch_level).attach(engine)
        if self.patience > 0:
            self.stopper.set_trainer(engine)
            self.stopper.attach(self.validator)
            engine.add_event_handler(Events.TERMINATE, self._mark_stopped)
        if self.curve_path is not None and is_rank_zero():
            self.validator.add_event_handler(Events.COMPLETED, lambda ev: self.record(engine, ev))
        if self.best_model_path is not None:
            EnsureBestModel(self.validator, self.best_model_path).attach(engine)
        if self.restore_best is not None and self.patience > 0:
            engine.add_event_handler(Events.COMPLETED, lambda _: self.restore_best.restore())

    def record(self, trainer: Engine, evaluator: Engine) -> None:
        """Append this validation's ``metric`` to ``curve_path`` (header on the first row)."""
        new = not self.curve_path.is_file()
        self.curve_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.curve_path, "a", encoding="utf-8") as f:
            if new:
                f.write(f"epoch,iteration,{self.metric}\n")
            f.write(f"{trainer.state.epoch},{trainer.state.iteration},{float(evaluator.state.metrics[self.metric])}\n")

    def _mark_stopped(self, engine: Engine) -> None:
        h = getattr(self.stopper, "_handler", None)
        self.stopped = self.stopped or bool(h is not None and h.counter >= self.patience)

    def state_dict(self) -> dict[str, Any]:
        """Patience counter, best score and whether it stopped the run (in the stage's checkpoint: a resumed run
        stops when an uninterrupted one would, and one that had stopped stays stopped)."""
        return {**_early_stop_state(self.stopper), "stopped": self.stopped}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _load_early_stop_state(self.stopper, state)
        self.stopped = bool(state.get("stopped", False))
        if self.stopped and self._trainer is not None:  # loaded at Events.STARTED: the run ends before its loop
            self._trainer.should_terminate = True


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


def _every(n: int) -> Callable[[Engine, int], bool]:
    """An ignite event filter firing on every ``n``-th event (MONAI's ``StatsHandler`` takes a filter: an int
    ``iteration_log`` is only truthy there, and logs every iteration)."""

    def every(engine: Engine, event: int) -> bool:
        return event % n == 0

    return every


class EpochMeans:
    """Means of an engine's scalar (0-d) outputs over the current epoch, summed on the outputs' device (no host
    sync per iteration) and read once by ``means()``. A key some iterations lack (the WGAN-GP generator loss,
    every ``n_critic``-th) is averaged over the iterations that have it. ``last`` holds the newest epoch's means."""

    def __init__(self):
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._fresh = False
        self.last: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.accumulate)

    def reset(self, engine: Engine | None = None) -> None:
        self._sums, self._counts, self._fresh = {}, {}, False

    def accumulate(self, engine: Engine) -> None:
        out = _first_item(engine.state.output)
        if not isinstance(out, Mapping):
            return
        for k, v in out.items():
            if isinstance(v, torch.Tensor) and v.ndim == 0 and v.is_floating_point():
                v = v.detach().float()
                self._sums[str(k)] = self._sums[str(k)] + v if str(k) in self._sums else v
                self._counts[str(k)] = self._counts.get(str(k), 0) + 1
                self._fresh = True

    def means(self) -> dict[str, float]:
        if self._fresh:
            keys = list(self._sums)
            values = torch.stack([self._sums[k] for k in keys]).cpu().tolist()  # the one host read of the epoch
            self.last = {k: v / self._counts[k] for k, v in zip(keys, values)}
            self._fresh = False
        return dict(self.last)


class RunProgress:
    """Where a run stands, as one line: ``epoch 3/100, iteration 36/1200 (3 %), ETA 0:12:31``. The ETA is from this
    run's own pace since its first iteration, so a resumed run is not credited with the iterations it loaded."""

    def __init__(self):
        self._t0: float | None = None
        self._it0 = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_STARTED, self.iteration_started)

    def started(self, engine: Engine) -> None:
        self._t0 = None

    def iteration_started(self, engine: Engine) -> None:
        if self._t0 is None:
            self._t0, self._it0 = time.monotonic(), engine.state.iteration - 1

    @staticmethod
    def total(engine: Engine) -> int | None:
        s = engine.state
        return int(s.max_epochs) * int(s.epoch_length) if s.max_epochs and s.epoch_length else None

    def eta_seconds(self, engine: Engine) -> float | None:
        total, done = self.total(engine), engine.state.iteration - self._it0
        if total is None or self._t0 is None or done <= 0:
            return None
        return (time.monotonic() - self._t0) / done * max(total - engine.state.iteration, 0)

    def line(self, engine: Engine) -> str:
        s, total = engine.state, self.total(engine)
        where = f"epoch {s.epoch}/{s.max_epochs}, iteration {s.iteration}"
        if not total:
            return where
        eta = self.eta_seconds(engine)
        eta_text = f", ETA {datetime.timedelta(seconds=round(eta))}" if eta is not None else ""
        return f"{where}/{total} ({100.0 * s.iteration / total:.0f} %){eta_text}"


def _values_text(values: Mapping[str, Any]) -> str:
    return " ".join(f"{k}: {float(v):.4g}" for k, v in sorted(values.items()) if isinstance(v, (int, float)))


def _hparam_value(v: Any) -> Any:
    """A value ``SummaryWriter.add_hparams`` accepts (bool, int, float, str)."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    return v if isinstance(v, (bool, int, float, str)) else str(v)


class TrainingMonitor:
    """What a person watching a stage needs, attached in one go (rank 0 only):

    - on a terminal, ignite's progress bar (losses, the epoch's ETA) and no per-iteration log lines to break it;
      off a terminal, MONAI's ``StatsHandler`` logs a line every ``log_interval`` iterations with the losses, the
      percentage done and the run's ETA;
    - an epoch summary line (epoch means of every loss, percentage, ETA) after an epoch when ``log_interval``
      iterations have passed since the last one (and after the first and the last epoch), and the epoch means in
      TensorBoard every epoch (``epoch/<tag>/<loss>``);
    - TensorBoard: MONAI's ``TensorBoardStatsHandler`` (iteration scalars every ``log_interval``),
      ``TensorBoardGanHandler`` (learning rates of ``optimizers``; with ``image_keys`` a grid of mid slices every
      ``image_interval`` iterations and at epoch ends) and, when training completes, the run's hyper-parameters
      (``hparams`` plus the optimisers' learning rates, epochs, batch size) with its final epoch means
      (``SummaryWriter.add_hparams``, run ``hparams_<tag>``);
    - the ``GanHealthMonitor`` (``gan_health``: true, or a mapping of its options, e.g. ``lr_options``), every
      ``min(log_interval, 10)`` iterations, reporting into ``gan_health.json`` beside ``log_dir``.

    Args:
        tag: the stage's name in logs (and TensorBoard's tag for a single-number output: ``<tag>_loss``).
        log_dir: TensorBoard folder (the writer is made at attach, on rank 0).
        output_transform: engine output -> scalars (``scalar_outputs``: every 0-d entry; ``loss_output``: the loss).
    """

    def __init__(self, tag: str, log_dir: str | os.PathLike, log_interval: int = 10, image_interval: int = 50,
                 optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
                 image_keys: Sequence[str] | None = None, gan_health: Any = False,
                 output_transform: Callable = None, progress: Any = "auto", hparams: Mapping[str, Any] | None = None):
        self.tag, self.log_dir, self.log_interval = str(tag), log_dir, max(int(log_interval), 1)
        self.image_interval, self.optimizers = int(image_interval), dict(optimizers or {})
        self.image_keys = tuple(image_keys) if image_keys else None
        self.health_options = dict(gan_health) if isinstance(gan_health, Mapping) else (
            {} if as_bool(gan_health) else None)
        self.progress, self.hparams = progress, dict(hparams or {})
        self.output_transform = output_transform or scalar_outputs
        self.writer = None
        self.means, self.run_progress = EpochMeans(), RunProgress()
        self.health: GanHealthMonitor | None = None
        self.stats: StatsHandler | None = None
        self.on_terminal = False
        self._summary_iteration: int | None = None

    def attach(self, engine: Engine) -> None:
        if not is_rank_zero():
            return
        self.writer = summary_writer(self.log_dir)
        bar = ProgressHandler(self.progress, persist=False)
        self.on_terminal = bar.is_enabled()
        bar.attach(engine)  # first: each epoch's bar is closed before the epoch summary line is logged
        self.means.attach(engine)
        self.run_progress.attach(engine)
        self.stats = StatsHandler(tag_name=self.tag, output_transform=self.output_transform,
                                  iteration_log=False if self.on_terminal else _every(self.log_interval),
                                  iteration_print_logger=self.log_iteration, epoch_print_logger=self.log_epoch)
        self.stats.attach(engine)
        TensorBoardStatsHandler(summary_writer=self.writer, iteration_log=self.log_interval, tag_name=f"{self.tag}_loss",
                                output_transform=self.output_transform).attach(engine)
        TensorBoardGanHandler(optimizers=self.optimizers, image_keys=self.image_keys or (),
                              scalar_interval=self.log_interval,
                              image_interval=self.image_interval if self.image_keys else 0,
                              summary_writer=self.writer).attach(engine)
        if self.health_options is not None:
            options = {"interval": min(self.log_interval, 10), "tag": self.tag,
                       "report_path": Path(self.log_dir).parent / "gan_health.json", **self.health_options}
            self.health = GanHealthMonitor(**options)
            self.health.attach(engine)
        engine.add_event_handler(Events.COMPLETED, self.log_hparams)

    def log_iteration(self, engine: Engine) -> None:
        """The off-terminal line every ``log_interval`` iterations: where the run stands and its losses (left to
        the epoch summary when the iteration ends an epoch that logs one)."""
        s = engine.state
        if s.epoch_length and s.iteration % s.epoch_length == 0 and self.summary_due(engine):
            return
        values = self.output_transform(s.output)
        values = values if isinstance(values, Mapping) else {f"{self.tag}_loss": values}
        self.stats.logger.info(f"{self.tag}: {self.run_progress.line(engine)} -- {_values_text(values)}")

    def log_epoch(self, engine: Engine) -> None:
        """Epoch means to TensorBoard (every epoch) and the epoch summary line (see the class docstring)."""
        means = self.means.means()
        for k, v in means.items():
            self.writer.add_scalar(f"epoch/{self.tag}/{k}", v, engine.state.epoch)
        s = engine.state
        if self.summary_due(engine):
            self._summary_iteration = s.iteration
            metrics = {k: v for k, v in (s.metrics or {}).items() if isinstance(v, (int, float))}
            self.stats.logger.info(f"{self.tag}: {self.run_progress.line(engine)} -- epoch means "
                                   f"{_values_text(means)}{' -- ' + _values_text(metrics) if metrics else ''}")

    def summary_due(self, engine: Engine) -> bool:
        """Whether the epoch ending now logs a summary line: the first and the last epoch, and one after
        ``log_interval`` iterations since the last summary (a run of 2-iteration epochs is not one line each)."""
        s, last = engine.state, self._summary_iteration
        return last is None or (s.max_epochs is not None and s.epoch >= s.max_epochs) or \
            s.iteration - last >= self.log_interval

    def hyperparameters(self, engine: Engine) -> dict[str, Any]:
        """The stage's main settings: ``hparams`` over what the engine tells (lr per optimiser, epochs, batch)."""
        hp: dict[str, Any] = {"stage": self.tag, "max_epochs": engine.state.max_epochs,
                              "epoch_length": engine.state.epoch_length}
        batch = getattr(getattr(engine, "data_loader", None), "batch_size", None)
        if batch is not None:
            hp["batch_size"] = batch
        for name, opt in self.optimizers.items():
            hp[f"lr_{name}"] = opt.param_groups[0].get("initial_lr", opt.param_groups[0]["lr"])
        for k, v in (getattr(engine, "options", None) or {}).items():
            if v is not None:
                hp[k] = v
        for k in ("n_critic", "lambda_rec", "mode"):
            if isinstance(getattr(engine, k, None), (bool, int, float, str)):
                hp[k] = getattr(engine, k)
        hp.update(self.hparams)
        return {str(k): _hparam_value(v) for k, v in hp.items()}

    def log_hparams(self, engine: Engine) -> None:
        """At the end of training: hyper-parameters and final epoch means (TensorBoard's HPARAMS tab)."""
        metrics = {f"final/{k}": float(v) for k, v in (self.means.means() or {}).items()}
        metrics["final/iterations"] = float(engine.state.iteration)
        if self.health is not None:
            metrics["final/gan_warnings"] = float(len(engine.state.gan_warnings))
        self.writer.add_hparams(self.hyperparameters(engine), metrics, run_name=f"hparams_{self.tag}")
        self.writer.flush()


class MemoryEstimate:
    """Say up front, in one line, when a stage's estimated peak memory exceeds what the device has (#21 item 5).

    The estimate is ``fixed_gb + per_sample_gb * batch_size * prod(image_size) / prod(reference_size)``: networks
    and optimisers plus activations that grow with the batch and the image, calibrated on the bundle's default
    widths from peak resident memory measured on a CPU (the bundle's docs/README.md gives the figures). At
    ``STARTED`` it is compared with the physical memory (CPU) or the GPU's memory (CUDA): above 80 % of it, a
    warning names the estimate, the memory there is and ``option`` (the setting that lowers it, with the largest
    value that needs at most half the memory).
    """

    def __init__(self, what: str, batch_size: int, image_size: Sequence[int], fixed_gb: float, per_sample_gb: float,
                 reference_size: Sequence[int], option: str, device: Any = "cpu", available_gb: float | None = None):
        self.what, self.batch_size, self.option = str(what), int(batch_size), str(option)
        self.scale = float(np.prod([int(s) for s in image_size])) / float(np.prod([int(s) for s in reference_size]))
        self.fixed_gb, self.per_sample_gb = float(fixed_gb), float(per_sample_gb)
        self.device, self.available = torch.device(device), available_gb

    def estimate_gb(self, batch_size: int | None = None) -> float:
        b = self.batch_size if batch_size is None else int(batch_size)
        return self.fixed_gb + self.per_sample_gb * b * self.scale

    def available_gb(self) -> float:
        if self.available is not None:
            return float(self.available)
        if self.device.type == "cuda" and torch.cuda.is_available():
            return torch.cuda.get_device_properties(self.device).total_memory / 2**30
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30

    def message(self) -> str | None:
        """The warning, or ``None`` when the estimate fits."""
        need, have = self.estimate_gb(), self.available_gb()
        if need <= 0.8 * have:  # the rest for the system, the data and the estimate's error
            return None
        fits = max((b for b in range(1, self.batch_size) if self.estimate_gb(b) <= 0.5 * have), default=None)
        lower = f"{self.option} {fits} needs about {self.estimate_gb(fits):.1f} GB" if fits else \
            f"lower {self.option} or the image size"
        return (f"{self.what}: batch {self.batch_size} needs about {need:.0f} GB of memory, too close to the "
                f"{have:.0f} GB this {self.device.type.upper()} has (the run may be killed); {lower}")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        msg = self.message()
        if msg and is_rank_zero():
            logger.warning(msg)


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
