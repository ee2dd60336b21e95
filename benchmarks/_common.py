"""Helpers shared by the benchmark scripts: device sync, timing, peak memory, Markdown tables, machine line."""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import re
import resource
import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["sync", "machine_line", "load_line", "md_table", "median", "short_error", "PeakMemory", "rss_mb",
           "timed_iterations", "fit_exponent", "count_flops", "DeviceClock", "trainer_seconds_per_it"]


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so wall-clock times cover the work itself."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def machine_line(device: torch.device) -> str:
    device = torch.device(device)
    gpu = f" {torch.cuda.get_device_name()}" if device.type == "cuda" else ""
    return (f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), device {device}{gpu}")


def load_line() -> str:
    """The 1/5/15-minute load averages: other processes on the machine make the timings noisy."""
    try:
        return "load average (1/5/15 min): " + " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load average: n/a"


def md_table(headers: Sequence[str], rows: Sequence[Sequence], align: str | None = None) -> str:
    """A Markdown table; ``align``: one char per column, ``l`` or ``r`` (default: first left, others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" if a == "l" else "---:" for a in align) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def short_error(e: BaseException, n: int = 90) -> str:
    """One line for a table cell: exception type and the start of its first message line."""
    msg = (str(e).strip().splitlines() or [""])[0].replace("|", "/")
    return f"{type(e).__name__}: {msg[:n]}"


def rss_mb() -> float:
    """Current resident set size (MB)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _trim() -> None:
    """Give freed heap memory back to the OS (glibc), so that the next peak is not hidden by retained memory."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of a block: on the CPU the peak RSS (Linux: VmHWM, reset through /proc/self/clear_refs; else
    ``ru_maxrss``, a peak since the process started); on CUDA also ``torch.cuda.max_memory_allocated``.

    After the block: ``peak_mb`` (peak RSS), ``growth_mb`` (peak RSS minus the RSS at entry), ``gpu_peak_mb``
    (CUDA only, else None), ``gpu_base_mb`` (allocated at entry: ``gpu_peak_mb - gpu_base_mb`` is what the block
    added) and ``exact`` (whether the RSS peak could be reset at entry).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self.peak_mb = self.growth_mb = float("nan")
        self.gpu_peak_mb: float | None = None
        self.gpu_base_mb: float | None = None
        self.exact = False

    @staticmethod
    def _hwm() -> float | None:
        try:
            with open("/proc/self/status", encoding="utf-8") as f:
                return int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1)) / 1024
        except (OSError, AttributeError):
            return None

    def __enter__(self) -> PeakMemory:
        _trim()
        try:
            with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
                f.write("5")  # resets the peak RSS (VmHWM) to the current RSS
            self.exact = self._hwm() is not None
        except OSError:
            self.exact = False
        self.base_mb = rss_mb()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.gpu_base_mb = torch.cuda.memory_allocated() / 2**20
        return self

    def __exit__(self, *exc) -> None:
        sync(self.device)
        hwm = self._hwm() if self.exact else None
        self.peak_mb = hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        self.growth_mb = self.peak_mb - self.base_mb
        if self.device.type == "cuda":
            self.gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20


def timed_iterations(step: Callable[[int], None], n: int, device: torch.device) -> list[float]:
    """Run ``step(i)`` for i in range(n); seconds per call (synchronised on CUDA)."""
    times = []
    for i in range(n):
        sync(device)
        t0 = time.perf_counter()
        step(i)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def fit_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) against log(x): y ~ x^slope."""
    import math

    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn``, by the rules of ``torch.utils.flop_counter`` (``flop_registry``: matmuls and
    convolutions, forward and backward, 2 FLOPs per multiply-add, from the shapes; elementwise ops and normalisation
    count 0). A plain dispatch mode rather than ``FlopCounterMode``, whose module tracker's backward hooks break
    ``torch.autograd.grad`` (the gradient penalty's double backward)."""
    from torch.utils.flop_counter import TorchDispatchMode, flop_registry

    class _Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            rule = flop_registry.get(func._overloadpacket)
            if rule is not None:
                self.total += int(rule(*args, **kwargs, out_val=out))
            return out

    with _Count() as counter:
        fn()
    return counter.total


class DeviceClock:
    """Elapsed time between ``mark()`` calls without a host sync in between: CUDA events on a GPU (the stream's own
    timeline, so a host stall shows as idle GPU time), ``time.perf_counter`` on a CPU. ``seconds()`` synchronises
    once and returns the intervals between consecutive marks."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append(ev)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> list[float]:
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1000 for a, b in zip(self.marks, self.marks[1:])]
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


def trainer_seconds_per_it(trainer, warmup: int, device: torch.device) -> float:
    """Run an ignite trainer; mean seconds per iteration after ``warmup`` (>= 1) iterations, timed without a host
    sync inside the run (``DeviceClock`` marks at the end of iteration ``warmup`` and after the run), so that the
    host syncs the trainer itself makes are part of what is measured."""
    from ignite.engine import Events

    if warmup < 1:
        raise ValueError(f"warmup must be >= 1, got {warmup}")
    clock = DeviceClock(device)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=warmup), lambda _: clock.mark())
    trainer.run()
    clock.mark()
    timed = trainer.state.iteration - warmup
    if timed < 1 or len(clock.marks) != 2:
        raise ValueError(f"the trainer ran {trainer.state.iteration} iterations: need more than warmup={warmup}")
    return clock.seconds()[0] / timed
