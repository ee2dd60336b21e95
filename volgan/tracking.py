"""Optional MLflow experiment tracking through MONAI's ``MLFlowHandler``, for every bundle.

A bundle runs several engines (GAN trainer, segmentor trainer, their evaluators); ``MLflowTracking`` attaches one
MONAI ``MLFlowHandler`` per engine, all writing into a single MLflow run with the engine's name as the metric
prefix (``gan/g_loss``, ``unet/loss``, ``unet_val/val_loss``, ``lr/g``). Off (no import of mlflow) unless a
tracking URI is given, so MLflow stays an optional dependency (``pip install volgan[mlflow]``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from ignite.engine import Engine
from monai.handlers import MLFlowHandler

from volgan.distributed import is_rank_zero
from volgan.errors import VolganConfigError
from volgan.handlers import scalar_outputs

__all__ = ["MLflowTracking", "PrefixedMLFlowHandler"]

logger = logging.getLogger(__name__)


class PrefixedMLFlowHandler(MLFlowHandler):
    """MONAI ``MLFlowHandler`` whose metric names carry a prefix (``<prefix>/<name>``), that logs the learning
    rates of named optimisers (``lr/<name>``) with the iteration scalars, and whose epoch-level step can come from
    another engine (an evaluator reports at its trainer's epoch or iteration)."""

    def __init__(self, prefix: str, optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
                 step_fn: Callable[[Engine], int] | None = None, **kwargs):
        kwargs.setdefault("output_transform", scalar_outputs)
        super().__init__(optimizer_param_names=[], **kwargs)
        self.prefix, self.optimizers, self.step_fn = prefix, dict(optimizers or {}), step_fn

    def _log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        named = {k if k.startswith("lr/") else f"{self.prefix}/{k}": float(v) for k, v in metrics.items()
                 if isinstance(v, (int, float, torch.Tensor)) and torch.as_tensor(v).numel() == 1}
        if named:
            super()._log_metrics(named, step=step)

    def _default_iteration_log(self, engine: Engine) -> None:
        super()._default_iteration_log(engine)
        optimizers = dict(self.optimizers)
        if isinstance(getattr(engine, "optimizer", None), torch.optim.Optimizer):  # MONAI SupervisedTrainer
            optimizers.setdefault(self.prefix, engine.optimizer)
        if optimizers:
            lrs = {f"lr/{n}": float(o.param_groups[0]["lr"]) for n, o in optimizers.items()}
            self._log_metrics(lrs, step=engine.state.iteration)

    def _default_epoch_log(self, engine: Engine) -> None:
        if self.step_fn is None:
            return super()._default_epoch_log(engine)
        if engine.state.metrics:
            self._log_metrics(dict(engine.state.metrics), step=int(self.step_fn(engine)))


class MLflowTracking:
    """Log a bundle's losses, learning rates and validation metrics to MLflow (every method; issue #7).

    Args:
        tracking_uri: MLflow tracking URI (``sqlite:////abs/path/mlflow.db``, ``http://host:5000``; MLflow 3 has no file store);
            ``None``/empty: tracking is off and nothing is imported.
        experiment_name: MLflow experiment (created when missing).
        run_name: the run all engines of this bundle write into; default ``<experiment>_<YYYYmmdd_HHMMSS>``.
        interval: iterations between iteration-level logs.
        params: logged once as the run's parameters (e.g. the bundle's hyper-parameters).

    In a bundle: ``mlflow: {_target_: volgan.tracking.MLflowTracking, tracking_uri: "@mlflow_tracking_uri", ...}``;
    ``initialize`` calls ``@mlflow.attach(...)`` with the engines, ``finalize`` calls ``@mlflow.close()``.
    Under DDP only rank 0 logs.
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "volgan", run_name: str | None = None,
                 interval: int = 10, params: Mapping[str, Any] | None = None):
        self.tracking_uri = str(tracking_uri) if tracking_uri else None
        self.experiment_name = experiment_name
        self.run_name = run_name or f"{experiment_name}_{time.strftime('%Y%m%d_%H%M%S')}"
        self.interval = max(int(interval), 1)
        self.params = {k: str(v) for k, v in (params or {}).items()}
        self.handlers: list[PrefixedMLFlowHandler] = []

    @property
    def enabled(self) -> bool:
        return bool(self.tracking_uri) and is_rank_zero()

    def _handler(self, prefix: str, **kwargs) -> PrefixedMLFlowHandler:
        first = not self.handlers
        h = PrefixedMLFlowHandler(prefix, tracking_uri=self.tracking_uri, experiment_name=self.experiment_name,
                                  run_name=self.run_name, experiment_param=self.params if first else None,
                                  **kwargs)
        self.handlers.append(h)
        return h

    def attach(self, trainers: Mapping[str, Engine] | None = None,
               evaluators: Mapping[str, tuple[Engine, Engine]] | None = None,
               optimizers: Mapping[str, torch.optim.Optimizer] | None = None, epoch_level_validation: bool = True
               ) -> MLflowTracking:
        """Attach to ``trainers`` (name -> engine: iteration scalars every ``interval`` iterations and epoch
        metrics) and ``evaluators`` (name -> (evaluator, its trainer): metrics at the trainer's epoch, or at its
        iteration when ``epoch_level_validation`` is false). ``optimizers``' learning rates go with the first
        trainer's iteration logs. Returns self; does nothing when tracking is off."""
        if not self.enabled:
            return self
        try:
            import mlflow  # noqa: F401
        except ImportError as exc:
            raise VolganConfigError(
                f"mlflow_tracking_uri is {self.tracking_uri!r} but mlflow is not installed: "
                "pip install mlflow-skinny (or volgan[mlflow]), or leave mlflow_tracking_uri null") from exc
        every = self.interval
        for i, (name, engine) in enumerate((trainers or {}).items()):
            self._handler(name, optimizers=optimizers if i == 0 else None,
                          iteration_log=lambda e, it: it % every == 0).attach(engine)
        for name, (evaluator, trainer) in (evaluators or {}).items():
            step = (lambda e, t=trainer: t.state.epoch) if epoch_level_validation else \
                (lambda e, t=trainer: t.state.iteration)
            self._handler(name, iteration_log=False, step_fn=step).attach(evaluator)
        logger.info("MLflow tracking: experiment %r, run %r at %s", self.experiment_name, self.run_name,
                    self.tracking_uri)
        return self

    def close(self) -> None:
        """Mark the run finished (bundle ``finalize``)."""
        for h in self.handlers:
            try:
                h.close()
            except Exception as exc:  # noqa: BLE001 - never lose a finished training over its tracking
                logger.warning("MLflow: could not close the run: %s", exc)
        self.handlers = []

