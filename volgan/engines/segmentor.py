"""Supervised segmentor training on the common trainer base: the downstream segmentors of every pipeline (P1's
evaluation U-Nets, P3's fine-tuning, P4/P5's U-Nets on mixed minibatches) with the same options as the GANs."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.handlers import IgniteMetricHandler, from_engine
from monai.inferers import Inferer, SimpleInferer
from monai.metrics import CumulativeIterationMetric

from volgan.data.transforms import plain_tensor
from volgan.engines.base import VolganTrainer
from volgan.engines.keys import OutputKeys
from volgan.handlers import BestModelSaver, lower_is_better

__all__ = ["SegmentorTrainer", "ValidationLossEvaluator", "MeanLoss", "KeyedBatch", "image_label_batch"]


class KeyedBatch:
    """``prepare_batch`` for MONAI engines: ``(batch[input_key], batch[target_key])`` on the device, MetaTensors
    dropped; e.g. ``KeyedBatch("cond", "image")`` validates a label-map-to-image generator (P1) against the real
    image with MONAI's ``SupervisedEvaluator``."""

    def __init__(self, input_key: str = "image", target_key: str = "label"):
        self.input_key, self.target_key = input_key, target_key

    def __call__(self, batch: dict, device: torch.device | None = None, non_blocking: bool = False, **kwargs: Any):
        return (plain_tensor(batch[self.input_key]).to(device=device, non_blocking=non_blocking),
                plain_tensor(batch[self.target_key]).to(device=device, non_blocking=non_blocking))


#: ``(image, label)`` of a dict batch (MONAI's default ``prepare_batch``, MetaTensors dropped)
image_label_batch = KeyedBatch(OutputKeys.IMAGE, OutputKeys.LABEL)


class SegmentorTrainer(VolganTrainer):
    """Trains one segmentor: ``loss = loss_function(inferer(x, network), y)`` and one optimiser step (name ``"seg"``).

    What MONAI's ``SupervisedTrainer`` does, on the base every volgan trainer shares, so that the segmentors get
    the same options as the GANs: AMP in fp16 or bf16 (bf16 also on a CPU), gradient accumulation, and the
    non-finite guard (a NaN/Inf loss or gradient skips the step; ``max_nonfinite_steps`` in a row stop the run
    with ``NonFiniteLossError``, so a diverging U-Net is never trained on). ``engine.state.output`` holds
    ``image``, ``label``, ``pred`` and ``loss`` as MONAI's trainers do, so MONAI's handlers work unchanged.

    Args:
        device, max_epochs, train_data_loader, epoch_length, train_handlers, options and the trainer options:
            see ``VolganTrainer``.
        network, optimizer, loss_function: the segmentor, its optimiser and its loss (``loss(pred, label)``).
        prepare_batch: ``(batch, device, non_blocking) -> (image, label)``, e.g. a real/synthetic mixer from
            ``volgan.data.mixing``; default ``image_label_batch``.
        inferer: how the network runs in training (default ``SimpleInferer``).
    """

    def __init__(self, device: str | torch.device, max_epochs: int, train_data_loader: Iterable,
                 network: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_function: Callable,
                 prepare_batch: Callable | None = None, inferer: Inferer | None = None, **kwargs: Any):
        super().__init__(device=device, max_epochs=max_epochs, train_data_loader=train_data_loader,
                         optimizers={"seg": optimizer}, prepare_batch=prepare_batch or image_label_batch, **kwargs)
        self.network, self.optimizer, self.loss_function = network, optimizer, loss_function
        self.inferer = inferer if inferer is not None else SimpleInferer()

    def _iteration(self, engine: SegmentorTrainer, batchdata: dict) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        image, label = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)
        engine.network.train()
        with engine.autocast():
            pred = engine.inferer(image, engine.network)
            loss = engine.loss_function(pred, label).mean()
        engine.optimise("seg", loss)
        return {OutputKeys.IMAGE: image, OutputKeys.LABEL: label, OutputKeys.PRED: pred.detach(),
                OutputKeys.LOSS: loss.detach()}


class MeanLoss(CumulativeIterationMetric):
    """The mean of ``loss_function`` over the validation items, NaN when any item's loss is NaN. (MONAI's
    ``LossMetric`` drops NaN items, so a network whose every output is NaN scores 0.0 there and would be kept as
    the best model: issue #18.)"""

    def __init__(self, loss_function: Callable):
        super().__init__()
        self.loss_function = loss_function

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return torch.as_tensor(self.loss_function(y_pred, y), dtype=torch.float32).detach().reshape(1, 1)

    def aggregate(self) -> torch.Tensor:
        data = self.get_buffer()
        return data.float().mean() if isinstance(data, torch.Tensor) and data.numel() else torch.tensor(float("nan"))


class ValidationLossEvaluator(SupervisedEvaluator):
    """MONAI ``SupervisedEvaluator`` of a segmentor by its mean validation loss (P5 Sec. 2: early stopping on the
    validation loss; P4 trains its segmentor the same way): key metric ``val_loss`` (lower is better), and the
    network at its best validation exported to ``best_model_path`` (``self.best_model``, a ``BestModelSaver``
    that belongs in the training checkpoint). Early stopping attaches from the trainer's side
    (``volgan.handlers.EarlyStoppingValidation``), so the two configs do not refer to each other.

    Args:
        device, val_data_loader, network, amp and other ``SupervisedEvaluator`` arguments (``inferer``, ...).
        loss_function: the training loss, averaged over the validation set (``MeanLoss``: NaN stays NaN).
        best_model_path: where the best network is written (plain state dict).
        meta: what the network was trained with (image size, crop, axis), written beside it (``model.json``).
    """

    def __init__(self, device: str | torch.device, val_data_loader: Iterable, network: torch.nn.Module,
                 loss_function: Callable, best_model_path: str, val_handlers: list | None = None,
                 meta: Mapping[str, Any] | None = None, **kwargs: Any):
        self.best_model = BestModelSaver(network, best_model_path, metric="val_loss", mode="min", meta=meta)
        super().__init__(device=device, val_data_loader=val_data_loader, network=network,
                         key_val_metric={"val_loss": IgniteMetricHandler(
                             metric_fn=MeanLoss(loss_function), output_transform=from_engine(["pred", "label"]))},
                         metric_cmp_fn=lower_is_better, val_handlers=[*(val_handlers or []), self.best_model],
                         **kwargs)
