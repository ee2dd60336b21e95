"""Utilisation against the machine's limit (issue #23, items 1 and 5): FLOPs per training step of every method,
achieved FLOP/s and MFU against a dense matmul / convolution peak measured in the same run, and the scaling of
training and synthesis time and peak memory with the number of voxels.

    python benchmarks/bench_flops.py                           # CPU: every method, 3D 32^3-64^3, 2D 64^2-128^2
    python benchmarks/bench_flops.py --sections scaling        # time and memory vs voxels, log-log slope
    python benchmarks/bench_flops.py --quick                   # toy sizes (smoke test, seconds)
    python benchmarks/bench_flops.py --device cuda --precisions fp32,bf16

Sections:
  ``peak``: dense ``torch.mm`` (N x N) and ``conv3d`` (3x3x3, same padding) throughput in fp32 and bf16: the limit
    each MFU is measured against (the best of a few timed blocks).
  ``mfu``: FLOPs of one iteration of volgan's trainer (``torch.utils.flop_counter``'s rules over ``trainer.run()``
    of one batch: forward and backward of every G / D / S step, the gradient penalty's double backward included)
    and the trainer's seconds per iteration (the same networks at the bundles' widths) -> achieved GFLOP/s, MFU.
  ``scaling``: MM-GAN trainer step and whole-volume synthesis (one generator pass, eval, no grad) vs patch size:
    seconds and peak memory (RSS growth on a CPU, ``max_memory_allocated`` on CUDA), fitted log-log slopes.

The counting rules (``torch.utils.flop_counter.flop_registry``) count matmuls and convolutions only (2 FLOPs per
multiply-add); normalisation, activations, spectral-norm power iterations on small matrices and the optimiser
count 0, so MFU < 1 also measures the time spent in what is not a convolution.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    DeviceClock,
    PeakMemory,
    count_flops,
    fit_exponent,
    load_line,
    machine_line,
    md_table,
    short_error,
    trainer_seconds_per_it,
)
from bench_training import METHODS  # noqa: E402

SECTIONS = ("peak", "mfu", "scaling")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: trainer options of each precision (fp16: CUDA AMP with one GradScaler per optimiser)
PRECISION_OPTIONS = {"fp32": {}, "bf16": {"amp": True, "amp_dtype": "bfloat16"},
                     "fp16": {"amp": True, "amp_dtype": "float16"}}


def precision_unavailable(precision: str, device: torch.device) -> str | None:
    """Why ``precision`` cannot run on ``device`` (None when it can)."""
    if precision not in DTYPES:
        return f"unknown precision {precision!r}: choose from {', '.join(DTYPES)}"
    if precision == "fp16" and device.type != "cuda":
        return "fp16 AMP is CUDA-only (volgan's trainers ignore amp with float16 on a CPU)"
    return None


# --------------------------------------------------------------------------------------------------- peak


def _best_rate(fn, flops: int, device: torch.device, reps: int, blocks: int = 3) -> float:
    """FLOP/s of ``fn``: the best of ``blocks`` timed blocks of ``reps`` calls, after one warm-up call."""
    fn()
    rates = []
    for _ in range(blocks):
        clock = DeviceClock(device)
        clock.mark()
        for _ in range(reps):
            fn()
        clock.mark()
        rates.append(flops * reps / clock.seconds()[0])
    return max(rates)


def measure_peaks(device: torch.device, mm_n: int, conv: tuple[int, int, int], reps: int,
                  dtypes=("fp32", "bf16")) -> dict[tuple[str, str], dict]:
    """Dense throughput of ``torch.mm`` (``mm_n`` x ``mm_n``) and ``conv3d`` (batch, channels -> channels, size^3,
    3x3x3, padding 1; ``conv`` = (batch, channels, size)), forward, in each dtype: ``{(op, dtype): {gflops, shape}}``.
    On CUDA fp32 matmul is IEEE fp32 unless ``torch.backends.cuda.matmul.allow_tf32`` (off by default), while fp32
    convolutions use TF32 (``torch.backends.cudnn.allow_tf32``, on by default)."""
    out = {}
    for dt in dtypes:
        dtype = DTYPES[dt]
        with torch.no_grad():
            try:
                a = torch.randn(mm_n, mm_n, device=device, dtype=dtype)
                b = torch.randn(mm_n, mm_n, device=device, dtype=dtype)
                rate = _best_rate(lambda: torch.mm(a, b), 2 * mm_n**3, device, reps)
                out[("mm", dt)] = {"gflops": rate / 1e9, "shape": f"{mm_n}x{mm_n} @ {mm_n}x{mm_n}"}
            except Exception as exc:  # noqa: BLE001 - a table cell
                out[("mm", dt)] = {"error": short_error(exc)}
            try:
                n, c, s = conv
                x = torch.randn(n, c, s, s, s, device=device, dtype=dtype)
                w = torch.randn(c, c, 3, 3, 3, device=device, dtype=dtype)

                def conv3d():
                    return torch.nn.functional.conv3d(x, w, padding=1)

                rate = _best_rate(conv3d, count_flops(conv3d), device, reps)
                out[("conv3d", dt)] = {"gflops": rate / 1e9, "shape": f"({n}, {c}, {s}^3) -> {c} ch, 3^3"}
            except Exception as exc:  # noqa: BLE001
                out[("conv3d", dt)] = {"error": short_error(exc)}
    return out


PEAK_HEADERS = ["op", "dtype", "shape", "peak GFLOP/s"]


def peak_rows(peaks: dict) -> list[list[str]]:
    return [[op, dt, v.get("shape", ""), f"{v['gflops']:,.1f}" if "gflops" in v else f"**FAILED**: {v['error']}"]
            for (op, dt), v in peaks.items()]


def peak_table(peaks: dict) -> str:
    return md_table(PEAK_HEADERS, peak_rows(peaks), "lllr")


# --------------------------------------------------------------------------------------------------- mfu


def step_utilisation(key: str, size: int, batch: int, device: torch.device, quick: bool, precision: str,
                     warmup: int, its: int, peaks: dict) -> dict:
    """FLOPs of one trainer iteration of method ``key`` at ``size`` (``count_flops`` over one batch), seconds per
    iteration of the same trainer under ``precision``, achieved GFLOP/s and MFU against the ``precision`` peaks."""
    method = METHODS[key](quick, device)
    st = method.build(size)
    data = method.batches(size, batch, warmup + its)
    flops = count_flops(lambda: method.trainer(st, data[:1]).run())
    sec = trainer_seconds_per_it(method.trainer(st, data, **PRECISION_OPTIONS[precision]), warmup, device)
    achieved = flops / sec / 1e9
    row = {"method": method.short, "key": key, "patch": f"{size}^{method.dims}", "batch": batch,
           "precision": precision, "gflop_per_step": flops / 1e9, "ms_per_step": sec * 1000,
           "achieved_gflops": achieved}
    for op in ("conv3d", "mm"):
        peak = peaks.get((op, precision), {}).get("gflops")
        row[f"mfu_vs_{op}"] = achieved / peak if peak else None
    return row


def mfu_table(rows: list[dict]) -> str:
    def pct(x):
        return "" if x is None else f"{100 * x:.1f} %"

    cells = []
    for r in rows:
        if "error" in r or "skipped" in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r['error']}"
            cells.append([r["method"], r["patch"], r["batch"], r["precision"], why, "", "", "", ""])
            continue
        cells.append([r["method"], r["patch"], r["batch"], r["precision"], f"{r['gflop_per_step']:,.2f}",
                      f"{r['ms_per_step']:,.1f}", f"{r['achieved_gflops']:,.1f}", pct(r["mfu_vs_conv3d"]),
                      pct(r["mfu_vs_mm"])])
    return md_table(["method", "patch", "batch", "precision", "GFLOP per step", "ms per step", "achieved GFLOP/s",
                     "MFU vs conv3d peak (same dtype)", "MFU vs mm peak (same dtype)"], cells, "llrlrrrrr")


def utilisation_rows(plan, device, quick, precisions, warmup, its, peaks, progress=True) -> list[dict]:
    rows = []
    for key, sizes, batch in plan:
        for size in sizes:
            for prec in precisions:
                label = f"{size}^{METHODS[key].dims}"
                why = precision_unavailable(prec, device)
                if why:
                    rows.append({"method": METHODS[key].short, "key": key, "patch": label, "batch": batch,
                                 "precision": prec, "skipped": why})
                    continue
                try:
                    rows.append(step_utilisation(key, size, batch, device, quick, prec, warmup, its, peaks))
                except Exception as exc:  # noqa: BLE001
                    rows.append({"method": METHODS[key].short, "key": key, "patch": label, "batch": batch,
                                 "precision": prec, "error": short_error(exc)})
                if progress:
                    r = rows[-1]
                    done = (f"{r['gflop_per_step']:.2f} GFLOP, {r['ms_per_step']:.0f} ms, {r['achieved_gflops']:.1f} "
                            "GFLOP/s" if "achieved_gflops" in r else r.get("error", r.get("skipped")))
                    print(f"<!-- mfu {key} {label} {prec}: {done} -->", flush=True)
    return rows


# --------------------------------------------------------------------------------------------------- scaling


def synthesis_generator(quick: bool, device: torch.device) -> torch.nn.Module:
    """MM-GAN's generator at the bundle's widths (quick: toy widths), eval mode, running norm statistics (what
    the inference config uses for a volgan-trained model); random weights: time and memory do not depend on them."""
    from volgan.networks import SNUNetGenerator

    torch.manual_seed(0)
    channels = [4, 8, 16, 32] if quick else [16, 32, 64, 128]
    return SNUNetGenerator(3, 5, 1, channels=channels, norm_stats="running").to(device).eval()


def label_input(shape, device: torch.device, seed: int = 0) -> torch.Tensor:
    """A random 5-class one-hot label map of ``shape`` (batch 1)."""
    lab = torch.randint(0, 5, tuple(shape), generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(lab, 5).permute(3, 0, 1, 2)[None].float().to(device)


def _memory_mb(mem: PeakMemory) -> float:
    """What the block added: GPU allocator peak minus what was allocated at entry on CUDA, peak RSS growth on a CPU."""
    return mem.gpu_peak_mb - mem.gpu_base_mb if mem.gpu_peak_mb is not None else mem.growth_mb


def scaling_rows(device, quick, train_sizes, synth_sizes, warmup, its) -> list[dict]:
    rows = []
    method = METHODS["mmgan"](quick, device)
    for size in train_sizes:
        try:
            st = method.build(size)
            data = method.batches(size, 1, warmup + its)
            with PeakMemory(device) as mem:
                sec = trainer_seconds_per_it(method.trainer(st, data), warmup, device)
            rows.append({"what": "training (MM-GAN trainer, G+D step)", "size": size, "seconds": sec,
                         "memory_mb": _memory_mb(mem)})
        except Exception as exc:  # noqa: BLE001
            rows.append({"what": "training (MM-GAN trainer, G+D step)", "size": size, "error": short_error(exc)})
        print(f"<!-- scaling train {size} done -->", flush=True)
    g = synthesis_generator(quick, device)
    for size in synth_sizes:
        try:
            x = label_input([size] * 3, device)
            with torch.no_grad():
                g(label_input([min(size, 16)] * 3, device))  # warm-up (kernels, allocator)
                with PeakMemory(device) as mem:
                    clock = DeviceClock(device)
                    clock.mark()
                    g(x)
                    clock.mark()
                    sec = clock.seconds()[0]
            rows.append({"what": "synthesis (G forward, whole volume)", "size": size, "seconds": sec,
                         "memory_mb": _memory_mb(mem)})
            del x
        except Exception as exc:  # noqa: BLE001
            rows.append({"what": "synthesis (G forward, whole volume)", "size": size, "error": short_error(exc)})
        print(f"<!-- scaling synthesis {size} done -->", flush=True)
    return rows


def scaling_slopes(rows: list[dict]) -> dict[str, dict[str, float]]:
    """log-log slopes of time and memory against voxels, per kind (all points, and the upper half)."""
    out = {}
    for what in dict.fromkeys(r["what"] for r in rows):
        ok = [r for r in rows if r["what"] == what and "error" not in r]
        if len(ok) < 2:
            continue
        vox = [r["size"] ** 3 for r in ok]
        upper = ok[len(ok) // 2 - (len(ok) % 2 == 0):] if len(ok) >= 3 else ok
        mem = [(r["size"] ** 3, r["memory_mb"]) for r in ok if r["memory_mb"] > 0]
        out[what] = {"time": fit_exponent(vox, [r["seconds"] for r in ok]),
                     "time_upper": fit_exponent([r["size"] ** 3 for r in upper], [r["seconds"] for r in upper]),
                     "upper_from": upper[0]["size"],
                     "memory": fit_exponent(*zip(*mem)) if len(mem) >= 2 else float("nan")}
    return out


def scaling_table(rows: list[dict], device: torch.device) -> str:
    mem_head = "GPU peak added MB" if device.type == "cuda" else "peak RSS growth MB"
    cells = []
    for r in rows:
        if "error" in r:
            cells.append([r["what"], f"{r['size']}^3", f"{r['size'] ** 3:,}", f"failed: {r['error']}", "", ""])
            continue
        cells.append([r["what"], f"{r['size']}^3", f"{r['size'] ** 3:,}", f"{r['seconds'] * 1000:,.1f}",
                      f"{r['size'] ** 3 / r['seconds']:,.0f}", f"{r['memory_mb']:,.0f}"])
    return md_table(["what", "patch", "voxels", "ms", "voxels/s", mem_head], cells, "llrrrr")


# --------------------------------------------------------------------------------------------------- main


def make_config(args) -> SimpleNamespace:
    dev = torch.device(args.device)
    c = SimpleNamespace(device=dev, quick=args.quick)
    if args.quick:
        c.mm_n, c.conv, c.reps = 128, (1, 8, 12), 2
        c.plan = [("mmgan", [16], 1), ("cycleshape", [16], 1), ("wgan_p5", [32], 2), ("wgan_p4", [32], 2)]
        c.warmup, c.its = 1, 1
        c.train_sizes, c.synth_sizes = [16, 24], [16, 24]
    elif dev.type == "cuda":
        c.mm_n, c.conv, c.reps = 8192, (4, 64, 64), 10
        c.plan = [("mmgan", [64, 96, 128], 1), ("cycleshape", [64, 96], 1), ("wgan_p5", [128, 256], 16),
                  ("wgan_p4", [128, 256], 16)]
        c.warmup, c.its = 3, 10
        c.train_sizes, c.synth_sizes = [32, 48, 64, 96, 128, 160, 192], [32, 64, 96, 128, 160, 192, 256]
    else:
        c.mm_n, c.conv, c.reps = 1536, (1, 32, 32), 3
        c.plan = [("mmgan", [32, 48, 64], 1), ("cycleshape", [32, 48], 1), ("wgan_p5", [64, 128], 4),
                  ("wgan_p4", [64, 128], 4)]
        c.warmup, c.its = 1, 2
        c.train_sizes, c.synth_sizes = [32, 48, 64, 96], [32, 48, 64, 96, 128]
    c.its = args.its or c.its
    if args.methods:
        keep = set(args.methods.split(","))
        c.plan = [p for p in c.plan if p[0] in keep]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
        c.plan = [(k, sizes, b) for k, _, b in c.plan]
    return c


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="toy widths and sizes (seconds; used by the tests)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--sections", default="peak,mfu", help=f"comma-separated: {', '.join(SECTIONS)}")
    p.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, fp16 (CUDA)")
    p.add_argument("--methods", help=f"comma-separated subset of {', '.join(METHODS)}")
    p.add_argument("--sizes", help="comma-separated patch sizes for every method (default: per method)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--its", type=int, help="timed iterations per measurement (default 2 on a CPU)")
    args = p.parse_args(argv)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        raise SystemExit(f"unknown section {bad[0]!r}: choose from {', '.join(SECTIONS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = make_config(args)
    precisions = [s.strip() for s in args.precisions.split(",") if s.strip()]
    print(f"# FLOP utilisation and scaling ({'quick' if args.quick else 'default'})\n")
    print(f"{machine_line(cfg.device)}; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"command: `python benchmarks/bench_flops.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    print(load_line() + "\n")
    t0 = time.perf_counter()
    peaks: dict = {}
    if "peak" in sections or "mfu" in sections:
        peaks = measure_peaks(cfg.device, cfg.mm_n, cfg.conv, cfg.reps,
                              dtypes=[d for d in dict.fromkeys(["fp32", *precisions]) if d in DTYPES])
        print("## Peak: dense matmul and convolution, measured in this run\n")
        print(peak_table(peaks) + "\n")
    if "mfu" in sections:
        rows = utilisation_rows(cfg.plan, cfg.device, cfg.quick, precisions, cfg.warmup, cfg.its, peaks)
        print("\n## FLOPs per training step and MFU\n")
        print(mfu_table(rows))
        print(f"\nGFLOP per step: torch.utils.flop_counter's rules over one iteration of the trainer (forward + "
              f"backward of every optimiser step); ms per step: the trainer's mean over {cfg.its} iterations after "
              f"{cfg.warmup} warm-up; MFU = achieved / the peak of the same dtype above (2D methods: against the "
              "conv3d peak too, the dense-convolution limit of this machine).\n")
    if "scaling" in sections:
        rows = scaling_rows(cfg.device, cfg.quick, cfg.train_sizes, cfg.synth_sizes, cfg.warmup, cfg.its)
        print("\n## Scaling with voxels: training step and whole-volume synthesis\n")
        print(scaling_table(rows, cfg.device))
        for what, s in scaling_slopes(rows).items():
            print(f"\n{what}: time ~ voxels^{s['time']:.2f} (all points), ^{s['time_upper']:.2f} from "
                  f"{s['upper_from']}^3 on; memory ~ voxels^{s['memory']:.2f}")
        print()
    print(f"{load_line()}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        main()
