"""The base of every volgan trainer (GANs and segmentors): the same options everywhere (AMP fp16/bf16 with one
GradScaler per optimiser, gradient accumulation, cuDNN autotuning, skip-on-NaN with a deferred check)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable

import torch
from monai.engines import Trainer
from monai.engines.workflow import Workflow

from volgan.config import TRAINER_OPTIONS, amp_enabled, resolve_device, trainer_options
from volgan.errors import VolganError

__all__ = ["VolganTrainer", "NonFiniteLossError", "set_requires_grad"]

logger = logging.getLogger(__name__)

#: default iterations between host reads of the non-finite flags on CUDA (on a CPU: every step)
CUDA_NONFINITE_CHECK_INTERVAL = 50


class NonFiniteLossError(VolganError, RuntimeError):
    """Raised after too many consecutive non-finite losses or gradients."""


def set_requires_grad(nets: torch.nn.Module | Iterable[torch.nn.Module], flag: bool) -> None:
    """Freeze (``False``) or unfreeze the parameters of one network or several."""
    if isinstance(nets, torch.nn.Module):
        nets = [nets]
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


def _finite_flag(optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter] | None,
                 device: torch.device) -> torch.Tensor:
    """Device-side bool: every gradient of ``params`` (default: the optimiser's) is finite (no host sync)."""
    params = params if params is not None else [p for g in optimizer.param_groups for p in g["params"]]
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return torch.ones((), dtype=torch.bool, device=device)
    return torch.isfinite(torch.stack([g.abs().amax().float() for g in grads]).amax())


def _supports_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` honours ``optimizer.found_inf`` (fused Adam/AdamW/SGD: a skip on the device)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False)) and any(
        g.get("fused") for g in optimizer.param_groups)


class VolganTrainer(Trainer):
    """MONAI ``Trainer`` for one or several networks and optimisers (base of every volgan trainer).

    Adds: ``autocast()`` for CUDA AMP (fp16 with one ``GradScaler`` per optimiser, or bf16 with none);
    ``optimise(name, loss, optimizer, params)`` that backpropagates, unscales and steps, and skips the step
    (logged, counted in ``engine.state.nonfinite_steps``) when the loss or a gradient is not finite; after
    ``max_nonfinite_steps`` consecutive skips the run stops with ``NonFiniteLossError`` (handlers that fire
    on ``EXCEPTION_RAISED`` run, the last saved checkpoint is untouched). AMP is ignored off CUDA.
    Gradient accumulation (``grad_accum_steps`` > 1, for batch-1 3D training): each optimiser steps once per
    ``grad_accum_steps`` of its ``optimise`` calls (and at the end of every epoch), on the mean of the accumulated
    gradients; the networks do not change inside a window, so for per-sample losses and norms each optimiser's
    step equals one on the concatenated batch, except that G's gradient sees D as it was at the window's start
    (with one big batch, G would see D after D's step) (tested). On CUDA, ``non_blocking`` host-to-device copies are on by default
    and ``torch.backends.cudnn.benchmark`` is set (``cudnn_benchmark=False`` keeps cuDNN's deterministic choice).

    Args:
        device, max_epochs, train_data_loader, epoch_length, non_blocking, train_handlers: as MONAI's Trainer.
        optimizers: name -> optimiser; one ``GradScaler`` is created per name.
        options: the trainer options as one mapping (``volgan.config.TRAINER_OPTIONS``; a bundle passes its
            ``@trainer_options``), merged under the keyword arguments below that are given explicitly.
        amp: enable CUDA automatic mixed precision (on a CPU only with ``amp_dtype="bfloat16"``).
        amp_dtype: ``"float16"`` (with GradScaler, CUDA) or ``"bfloat16"`` (no scaler; CUDA or CPU).
        max_nonfinite_steps: consecutive non-finite steps tolerated before stopping (0 = never stop).
        grad_accum_steps: ``optimise`` calls per optimiser step (1 = step every call).
        cudnn_benchmark: on CUDA, let cuDNN pick the fastest convolution algorithms (not bitwise deterministic).
        nonfinite_check_interval: iterations between host reads of the per-step finite flags. 1 (default on a
            CPU): each step is checked on the host (one sync) and a non-finite one is reported the step it
            happens. > 1 (default 50 on CUDA): no host sync in the iteration; the skip itself happens on the
            device (GradScaler, or ``found_inf`` of a fused optimiser, e.g. ``Adam(..., fused=True)``); counting,
            the warning and the stop come at the next check (every n iterations and at the end of each epoch).
            A non-fused optimiser without a GradScaler falls back to one sync per step (warned once).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader: Iterable,
        optimizers: Mapping[str, torch.optim.Optimizer],
        epoch_length: int | None = None,
        non_blocking: bool | None = None,
        prepare_batch: Callable | None = None,
        train_handlers: Sequence | None = None,
        options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in TRAINER_OPTIONS}
        opts = trainer_options(options, **given)
        amp, amp_dtype, cudnn_benchmark = opts["amp"], opts["amp_dtype"], opts["cudnn_benchmark"]
        grad_accum_steps, max_nonfinite_steps = opts["grad_accum_steps"], opts["max_nonfinite_steps"]
        nonfinite_check_interval = opts["nonfinite_check_interval"]
        self.options = opts
        device = resolve_device(device)
        if nonfinite_check_interval is None:
            nonfinite_check_interval = CUDA_NONFINITE_CHECK_INTERVAL if device.type == "cuda" else 1
        self.nonfinite_check_interval = int(nonfinite_check_interval)
        self._pending_finite: list[tuple[str, int, torch.Tensor]] = []
        self._warned_sync: set[str] = set()
        use_amp = amp_enabled(amp, device)
        if non_blocking is None:
            non_blocking = device.type == "cuda"
        if device.type == "cuda" and cudnn_benchmark:
            torch.backends.cudnn.benchmark = True
        self.grad_accum_steps = int(grad_accum_steps)
        self._accum_count: dict[str, int] = {}
        self._accum_ok: dict[str, torch.Tensor] = {}
        super().__init__(
            device=device,
            max_epochs=int(max_epochs),
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            handlers=train_handlers,
            amp=use_amp,
            decollate=False,
            **({"prepare_batch": prepare_batch} if prepare_batch is not None else {}),
            **kwargs,
        )
        self.amp_dtype = getattr(torch, amp_dtype)
        # CPU: bf16 autocast on request (amp + amp_dtype "bfloat16"): 2.9x faster MM-GAN steps on a CPU with
        # AVX512-BF16 (benchmarks/README.md); fp16 autocast is CUDA-only, so amp alone stays a no-op on a CPU
        self.cpu_bf16 = amp and device.type == "cpu" and amp_dtype == "bfloat16"
        self.optimizers = dict(optimizers)
        self.scalers = {
            name: torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == "float16") for name in self.optimizers
        }
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.state.nonfinite_steps = 0
        self._consecutive_nonfinite = 0

    def run(self) -> None:  # type: ignore[override]
        """Run training; unlike ``Trainer.run`` the per-optimiser scalers made in ``__init__`` are kept (resume)."""
        Workflow.run(self)

    def autocast(self):
        """Autocast context: CUDA AMP when on; bf16 on a CPU when ``amp`` and ``amp_dtype="bfloat16"``; else a no-op."""
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=self.amp_dtype)
        if self.cpu_bf16:
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def optimise(self, name: str, loss: torch.Tensor, params: Sequence[torch.nn.Parameter] | None = None) -> bool:
        """Backward ``loss`` and step optimiser ``name``; the step is skipped when the loss or a gradient is not finite.

        With ``grad_accum_steps`` n > 1 the backward is of ``loss / n`` and the step waits for the end of the
        window (n calls, or the end of the epoch); a window with a non-finite loss or gradient is skipped as a
        whole. Returns False when the step was skipped and the check is per step; True inside a window and when
        the check is deferred (``nonfinite_check_interval`` > 1: the skip happens on the device, the count and the
        stop at the next check)."""
        optimizer, scaler, n = self.optimizers[name], self.scalers[name], self.grad_accum_steps
        count = self._accum_count.get(name, 0)
        if count == 0:
            optimizer.zero_grad(set_to_none=True)
        loss_ok = torch.isfinite(loss.detach()).all()
        self._accum_ok[name] = loss_ok if count == 0 else self._accum_ok[name] & loss_ok
        scaled = loss / n if n > 1 else loss
        (scaler.scale(scaled) if scaler.is_enabled() else scaled).backward()
        count += 1
        epoch_length = self.state.epoch_length or 0
        end_of_epoch = epoch_length > 0 and self.state.iteration % epoch_length == 0
        if count < n and not end_of_epoch:
            self._accum_count[name] = count
            return True
        self._accum_count[name] = 0
        ok = self._accum_ok.pop(name) & _finite_flag(optimizer, params, loss.device)  # scaled grads: inf iff unscaled
        on_device = self.nonfinite_check_interval > 1 and (scaler.is_enabled() or _supports_found_inf(optimizer))
        finite = True
        if not on_device:
            if self.nonfinite_check_interval > 1 and name not in self._warned_sync:
                self._warned_sync.add(name)
                logger.warning("optimizer %r is not fused: skipping its non-finite steps needs a host sync per step "
                               "(build it with fused=True for sync-free steps)", name)
            finite = bool(ok)  # the one host sync of the step
        if scaler.is_enabled():
            scaler.step(optimizer)  # skips on its own inf check, which agrees with ``ok``; sync-free when fused
            scaler.update()
        elif on_device:
            optimizer.found_inf = (~ok).float()  # type: ignore[attr-defined]  # the contract GradScaler uses
            try:
                optimizer.step()
            finally:
                del optimizer.found_inf  # type: ignore[attr-defined]
        elif finite:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if not on_device:
            self._track_finite(name, finite, self.state.iteration)
            return finite
        self._pending_finite.append((name, self.state.iteration, ok))
        if end_of_epoch or self.state.iteration % self.nonfinite_check_interval == 0:
            self.check_nonfinite()
        return True

    def check_nonfinite(self) -> None:
        """Read the deferred per-step finite flags (one host sync), count and log skipped steps, stop when too many."""
        pending, self._pending_finite = self._pending_finite, []
        if pending:
            flags = torch.stack([f for _, _, f in pending]).cpu().tolist()
            for (name, iteration, _), finite in zip(pending, flags):
                self._track_finite(name, bool(finite), iteration)

    def _track_finite(self, name: str, finite: bool, iteration: int) -> None:
        if finite:
            self._consecutive_nonfinite = 0
            return
        self.state.nonfinite_steps += 1
        self._consecutive_nonfinite += 1
        logger.warning(
            "iteration %s: non-finite %s loss or gradient, step skipped (%d in a row)",
            iteration, name, self._consecutive_nonfinite,
        )
        if self.max_nonfinite_steps and self._consecutive_nonfinite >= self.max_nonfinite_steps:
            raise NonFiniteLossError(
                f"{self._consecutive_nonfinite} consecutive non-finite steps (last: {name} at iteration "
                f"{iteration}); stopping. The last saved checkpoint is intact: lower the learning rate "
                "or check the data for NaN/Inf and resume."
            )
