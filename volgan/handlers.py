"""Ignite/MONAI handlers volgan adds: atomic checkpoints, resume, generator export, image grids, progress."""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.handlers import CheckpointLoader

from volgan.utils import atomic_torch_save

__all__ = [
    "AtomicDiskSaver",
    "CheckpointHandler",
    "ResumeFromLatest",
    "ExportNetwork",
    "TensorBoardGanHandler",
    "ProgressHandler",
    "EarlyStopOnLoss",
    "SaveBestOnMetric",
    "GanHealthMonitor",
    "latest_checkpoint",
    "scalar_outputs",
    "loss_output",
]

logger = logging.getLogger(__name__)
_CKPT_RE = re.compile(r"^checkpoint_(\d+)\.pt$")


class AtomicDiskSaver(BaseSaveHandler):
    """Ignite save handler writing through a temp file, fsync and rename: a checkpoint is never truncated.

    Temp files left by a killed run (``.<name>.*.tmp``) are removed when the saver is created.
    """

    def __init__(self, dirname: str | os.PathLike):
        self.dirname = Path(dirname)
        self.dirname.mkdir(parents=True, exist_ok=True)
        for stale in self.dirname.glob(".checkpoint_*.tmp"):
            logger.warning("removing %s, left by an interrupted checkpoint write", stale)
            stale.unlink(missing_ok=True)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        atomic_torch_save(dict(checkpoint), self.dirname / filename)

    def remove(self, filename: str) -> None:
        path = self.dirname / filename
        if path.exists():
            path.unlink()


def latest_checkpoint(save_dir: str | os.PathLike) -> Path | None:
    """The ``checkpoint_<epoch>.pt`` with the highest epoch in ``save_dir`` (``None`` if there is none)."""
    d = Path(save_dir)
    if not d.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _CKPT_RE.match(p.name))]
    return max(found)[1] if found else None


class CheckpointHandler:
    """Saves the full resumable state every ``save_interval`` epochs as ``checkpoint_<epoch>.pt``, keeps the last
    ``n_saved``, and (with ``key_metric_name``) the best by that validation metric as ``best_<metric>=<v>.pt``.

    ``save_dict`` maps names to objects with ``state_dict``/``load_state_dict`` (networks, optimisers, scalers,
    schedulers, image pool, the trainer itself for epoch/iteration counters). Files are written atomically.
    """

    def __init__(self, save_dir: str | os.PathLike, save_dict: Mapping[str, Any], n_saved: int = 3,
                 save_interval: int = 1, key_metric_name: str | None = None, key_metric_n_saved: int = 1):
        self.save_dir = Path(save_dir)
        self.save_dict = {k: v for k, v in save_dict.items() if v is not None}
        self.n_saved, self.save_interval = int(n_saved), max(int(save_interval), 1)
        self.key_metric_name, self.key_metric_n_saved = key_metric_name, key_metric_n_saved

    def attach(self, engine: Engine) -> None:
        saver = AtomicDiskSaver(self.save_dir)
        last = Checkpoint(self.save_dict, saver, filename_prefix="", n_saved=self.n_saved,
                          global_step_transform=lambda e, _: e.state.epoch)
        last._fname_prefix = "checkpoint"  # noqa: SLF001 - name files checkpoint_<epoch>.pt whatever the dict holds
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), last)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), self.prune)
        if self.key_metric_name:
            best = Checkpoint(self.save_dict, saver, filename_prefix="best", n_saved=self.key_metric_n_saved,
                              score_name=self.key_metric_name,
                              score_function=lambda e: float(e.state.metrics.get(self.key_metric_name, float("-inf"))))
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.save_interval), best)


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
        from volgan.utils import as_bool

        self.save_dir, self.load_dict = save_dir, {k: v for k, v in load_dict.items() if v is not None}
        self.enabled, self.path, self.map_location = as_bool(enabled), path, map_location
        self.loaded_from: Path | None = None

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        path = Path(self.path) if self.path else latest_checkpoint(self.save_dir)
        if path is None:
            return
        from volgan.utils import safe_torch_load

        safe_torch_load(path)  # readable and weights-only, or a VolganDataError naming it
        logger.info("resuming from %s", path)
        self.loaded_from = path
        CheckpointLoader(load_path=str(path), load_dict=dict(self.load_dict), map_location=self.map_location).attach(engine)


class ExportNetwork:
    """Write ``{"model": network.state_dict()}`` to ``path`` atomically after each epoch and at the end
    (the weights inference and MONAI Label load, DESIGN.md bundle interface)."""

    def __init__(self, network: torch.nn.Module, path: str | os.PathLike, every: int = 1):
        self.network, self.path, self.every = network, Path(path), max(int(every), 1)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        net = self.network.module if hasattr(self.network, "module") else self.network
        if engine is not None and getattr(engine.state, "rank", 0) != 0:
            return
        atomic_torch_save({"model": {k: v.detach().cpu() for k, v in net.state_dict().items()}}, self.path)


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
        from torch.utils.tensorboard import SummaryWriter

        self.writer = summary_writer if summary_writer is not None else SummaryWriter(log_dir=str(log_dir))
        self.optimizers = dict(optimizers or {})
        self.image_keys, self.scalar_interval, self.image_interval = tuple(image_keys), scalar_interval, image_interval

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=max(self.scalar_interval, 1)), self.log_lr)
        engine.add_event_handler(Events.ITERATION_COMPLETED(every=max(self.image_interval, 1)), self.log_images)
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
        from volgan.utils import as_bool

        return as_bool(self.enabled)

    def attach(self, engine: Engine) -> None:
        if not self.is_enabled():
            return
        from ignite.contrib.handlers import ProgressBar

        kwargs = {"desc": self.desc} if self.desc else {}
        ProgressBar(persist=True, **kwargs).attach(engine, output_transform=self.output_transform)


class EarlyStopOnLoss:
    """Stop training when the epoch mean of ``output[key]`` has not improved (decreased by more than
    ``min_delta``) for ``patience`` epochs that report it (P2: stop when the segmentation loss stalls ~5 epochs).
    Epochs whose outputs lack ``key`` (e.g. a phase without segmentor updates) are not counted.
    """

    def __init__(self, key: str = "s_loss", patience: int = 5, min_delta: float = 0.0):
        self.key, self.patience, self.min_delta = key, int(patience), float(min_delta)
        self.best, self.bad_epochs, self._sum, self._n = float("inf"), 0, 0.0, 0

    def attach(self, engine: Engine) -> None:
        if self.patience <= 0:
            return
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._check)

    def _accumulate(self, engine: Engine) -> None:
        out = engine.state.output
        if isinstance(out, Mapping) and self.key in out:
            self._sum += float(out[self.key])
            self._n += 1

    def _check(self, engine: Engine) -> None:
        if self._n == 0:
            return
        mean, self._sum, self._n = self._sum / self._n, 0.0, 0
        if mean < self.best - self.min_delta:
            self.best, self.bad_epochs = mean, 0
            return
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            logger.info("early stop: %s has not improved for %d epochs (best %.4f)", self.key, self.patience, self.best)
            engine.terminate()


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


class SaveBestOnMetric:
    """Attach to an evaluator: after each run, export ``{"model": state_dict}`` to ``path`` when
    ``state.metrics[metric]`` improves (``mode="min"`` for losses, ``"max"`` for Dice); the best value is kept
    in ``self.best``. For early-stopped training, ``model.pt`` is then the network at the best validation."""

    def __init__(self, network: torch.nn.Module, path: str | os.PathLike, metric: str = "val_loss", mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.export, self.metric, self.mode = ExportNetwork(network, path), metric, mode
        self.best = float("inf") if mode == "min" else float("-inf")

    def attach(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.COMPLETED, self)

    def __call__(self, evaluator: Engine) -> None:
        value = float(evaluator.state.metrics[self.metric])
        if (value < self.best) if self.mode == "min" else (value > self.best):
            self.best = value
            self.export()
