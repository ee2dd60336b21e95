"""One-shot GPU check (issue #23): everything that has only ever run on a CPU, run once on CUDA, in one command.

    python benchmarks/gpu_check.py --output-dir OUT                        # on a GPU: at most ~8 minutes
    python benchmarks/gpu_check.py --output-dir OUT --device cpu --quick   # toy sizes, seconds (the test suite)

Writes OUT/gpu_check.md (the tables, also printed) and OUT/gpu_check.json. Sections (``--sections``, letters or
names), each on its own: a failure is recorded in its table, loudly, the other sections still run, and the exit
status is 1 at the end.

  a ``bundles``: every bundle trains a few iterations (``run_bundle(bundle, "train")``, tiny widths, embedded sample
    anatomy resized to toy volumes) with ``amp`` in fp16 (GradScaler per optimiser, fused Adam with ``found_inf``,
    the deferred non-finite check: the bundles' CUDA defaults) and in bf16, then runs its inference config on the
    trained weights; pass = no exception, finite weights, finite outputs written.
  b ``amp``: AMP (fp16, bf16) vs fp32 speed-up of the 3D training steps (MM-GAN G+D step, cycle/shape joint step)
    in volgan's trainers at ``--patch``, with the GPU peak memory and the steps AMP skipped.
  c ``mfu``: FLOPs of the MM-GAN trainer iteration and MFU against the dense ``torch.mm`` / ``conv3d`` peaks
    measured in the same run (fp32 and bf16; fp16 on CUDA).
  d ``synthesis``: whole-volume synthesis of a ``--synthesis-shape`` (240x240x155) label map by MM-GAN's generator:
    one pass vs volgan's ``TiledSynthesisInferer`` vs calling ``monai.inferers.sliding_window_inference`` directly;
    seconds, peak memory (``max_memory_allocated`` on CUDA; RSS growth on a CPU), difference to the one pass.
  e ``compile``: ``torch.compile`` of the generator on/off for the MM-GAN step (compile time apart).
  f ``sync``: the cost of a host sync per step: the MM-GAN trainer with fused Adam, ``nonfinite_check_interval``
    1 (a host read of the finite flags every optimiser step) vs 50 (volgan's CUDA default), interleaved rounds.
    Issue #23 item 4: the deferred check stays only if it saves >= 5 % of a step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    DeviceClock,
    PeakMemory,
    count_flops,
    load_line,
    machine_line,
    md_table,
    median,
    short_error,
    timed_iterations,
    trainer_seconds_per_it,
)
from bench_flops import (  # noqa: E402
    PRECISION_OPTIONS,
    label_input,
    PEAK_HEADERS,
    measure_peaks,
    peak_rows,
    precision_unavailable,
    step_utilisation,
    synthesis_generator,
)
from bench_training import METHODS, Precision  # noqa: E402

SECTIONS = {"a": "bundles", "b": "amp", "c": "mfu", "d": "synthesis", "e": "compile", "f": "sync"}
TITLES = {"bundles": "Every bundle trains and infers with AMP (fp16, bf16)",
          "amp": "AMP vs fp32: 3D training steps in volgan's trainers",
          "mfu": "FLOPs per MM-GAN training step and MFU against the measured peak",
          "synthesis": "Whole-volume synthesis: one pass vs tiles vs MONAI sliding windows",
          "compile": "torch.compile on/off: MM-GAN step",
          "sync": "Host sync per step: nonfinite_check_interval 1 vs 50"}
AMP_DTYPES = {"float16": "fp16", "bfloat16": "bf16"}
PRECISIONS = ("fp32", "fp16", "bf16")


class CheckFailed(RuntimeError):
    """A check that ran but did not pass (non-finite weights, no output written)."""


# --------------------------------------------------------------------------------------------------- a. bundles


def write_toy_cases(folder: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> Path:
    """``n`` (image, label) NIfTI pairs ``c<i>_image/_label``: the embedded sample brains (real T1 anatomy) resized
    to ``shape``, each with one simulated lesion (BraTS labels 1/2/4, brain 3; ``volgan.data.samples``)."""
    import nibabel as nib
    from scipy import ndimage

    from volgan.data.samples import SUBJECTS, add_synthetic_lesion, load_subject

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(n):
        image, brain, affine = load_subject(SUBJECTS[i % len(SUBJECTS)])
        zoom = [t / s for t, s in zip(shape, image.shape)]
        image = ndimage.zoom(image, zoom, order=1)
        brain = ndimage.zoom(brain.astype(np.uint8), zoom, order=0) > 0
        image, label = add_synthetic_lesion(image, brain, rng, radius=(0.12 * min(shape), 0.2 * min(shape)))
        affine = affine @ np.diag([1 / z for z in zoom] + [1.0])
        nib.save(nib.Nifti1Image(image.astype(np.float32), affine), str(folder / f"c{i}_image.nii.gz"))
        nib.save(nib.Nifti1Image(label.astype(np.uint8), affine), str(folder / f"c{i}_label.nii.gz"))
    return folder


def bundle_runs() -> dict[str, dict]:
    """Per bundle: the toy data it trains on, train overrides (tiny widths and budgets: the ``--quick`` settings of
    ``volgan.evaluation.registry``) and inference overrides.

    The 3D bundles train on 24^3 patches (the whole toy volume), not the harness's 16^3: at 16^3 their deepest
    convolutions see 2^3 feature maps, where oneDNN's bf16 conv3d weight gradient on a CPU (PyTorch 2.13) is
    intermittently NaN (about 1 run in 20-100 of a lone ``Conv3d(32, 16, 3, padding=1)`` on a 2^3 input; 0 of 200 at
    3^3 and above, and 0 of 200 with oneDNN off). volgan's guard then stops the run, as it should, but the check would
    fail on PyTorch's bug instead of volgan's code. 24^3 keeps every training convolution at >= 3^3."""
    from volgan.evaluation.registry import METHODS as HARNESS

    def quick(name, **extra):
        return {k: v for k, v in {**HARNESS[name].quick, **extra}.items() if k not in ("roi_size", "iterations",
                                                                                     "segmentor", "amp")}

    same_labels = {1: 1, 2: 2, 3: 3, 4: 4}
    return {
        "mmgan_label2mri_3d": dict(data="3d", train=dict(patch_size=[24] * 3, gen_channels=[4, 8, 16, 32],
                                                         disc_channels=[8, 16, 16], max_epochs=1),
                                   infer=dict(roi_size=[16] * 3)),
        "cycleshape_ct_mri_3d": dict(data="3d", train=quick("cycleshape_ct_mri_3d", label_map_a=same_labels,
                                                            label_map_b=same_labels, patch_size=[24] * 3,
                                                            gen_channels=[4, 8, 16, 16],
                                                            seg_channels=[4, 8, 16, 32],
                                                            intensity_a={"kind": "percentile"}, pretrain_s_epochs=0,
                                                            pretrain_gd_epochs=0, max_epochs=1),
                                     infer=dict(direction="a2b", roi_size=[16] * 3, label_map_a=same_labels,
                                                intensity_a={"kind": "percentile"})),
        "gan_pretrain_seg_2d": dict(data="2d", train=quick("gan_pretrain_seg_2d"),
                                    infer=dict(image_size=[32, 32], seg_channels=[8, 16, 32, 64])),
        "wgan_pairs_seg_2d": dict(data="2d", train=quick("wgan_pairs_seg_2d", val_fraction=0.25),
                                  infer=dict(image_size=[32, 32], unet_channels=[8, 8, 8])),
        "adversarial_unet_aug_2d": dict(data="2d", train=quick("adversarial_unet_aug_2d", ratio="2-2",
                                                               val_fraction=0.25),
                                        infer=dict(image_size=[32, 32], unet_channels=[8, 8, 8])),
    }


def _finite_outputs(folder: Path) -> int:
    """Number of NIfTI files written under ``folder``; raises when there is none or one is not finite."""
    import nibabel as nib

    files = sorted(folder.rglob("*.nii.gz"))
    if not files:
        raise CheckFailed(f"inference wrote no NIfTI output under {folder}")
    for f in files:
        if not np.isfinite(np.asarray(nib.load(str(f)).dataobj, dtype=np.float32)).all():
            raise CheckFailed(f"non-finite values in {f.name}")
    return len(files)


def run_one_bundle(name: str, spec: dict, dtype: str, device: torch.device, data: dict, out: Path) -> dict:
    from volgan.bundle import run_bundle
    from volgan.handlers import non_finite_entries

    ids = ({"domain_a": str(data["3d"]), "domain_b": str(data["3d"])} if name == "cycleshape_ct_mri_3d"
           else {"dataset_dir": str(data[spec["data"]])})
    common = dict(device=str(device), log_interval=1000, image_interval=1000)
    t0 = time.perf_counter()
    run_bundle(name, "train", output_dir=str(out / "train"), **ids, **spec["train"], **common, amp=True,
               amp_dtype=dtype)
    t_train = time.perf_counter() - t0
    model = out / "train" / "model.pt"
    if not model.is_file():
        raise CheckFailed(f"training wrote no {model.name}")
    bad = non_finite_entries(torch.load(model, map_location="cpu", weights_only=True))
    if bad:
        raise CheckFailed(f"non-finite weights in {model.name}: {bad[:3]}")
    t0 = time.perf_counter()
    run_bundle(name, "inference", input=str(data[spec["data"]]), ckpt_path=str(model), output_dir=str(out / "infer"),
               device=str(device), amp=True, **spec["infer"])
    return {"train_s": t_train, "infer_s": time.perf_counter() - t0, "outputs": _finite_outputs(out / "infer")}


def section_bundles(cfg) -> dict:
    runs = bundle_runs()
    rows, data_rows, failed = [], [], False
    with tempfile.TemporaryDirectory() as tmp:
        data = {"3d": write_toy_cases(Path(tmp) / "vol3d", 2, (24, 24, 24)),
                "2d": write_toy_cases(Path(tmp) / "vol2d", 4, (24, 24, 6), seed=1)}
        for name in cfg.bundles:
            for dtype in cfg.dtypes:
                cell = {"bundle": name, "amp_dtype": dtype}
                label = AMP_DTYPES.get(dtype, dtype)
                try:
                    if name not in runs:
                        raise CheckFailed(f"unknown bundle {name!r}: choose from {', '.join(runs)}")
                    why = precision_unavailable(label, cfg.device) if dtype in AMP_DTYPES else None
                    if why:
                        cell["skipped"] = why
                        rows.append([name, label, "skipped", why, "", "", ""])
                        data_rows.append(cell)
                        continue
                    res = run_one_bundle(name, runs[name], dtype, cfg.device, data, Path(tmp) / f"{name}_{dtype}")
                    cell.update(res, status="pass")
                    rows.append([name, label, "pass", "", f"{res['train_s']:.1f}", f"{res['infer_s']:.1f}",
                                 res["outputs"]])
                except Exception as exc:  # noqa: BLE001 - recorded loudly, the other rows still run
                    failed = True
                    cell.update(status="FAIL", error=short_error(exc, 300), traceback=traceback.format_exc(limit=8))
                    rows.append([name, label, "**FAIL**", short_error(exc, 160), "", "", ""])
                data_rows.append(cell)
                print(f"<!-- bundle {name} {dtype}: {cell.get('status', 'skipped')} -->", flush=True)
    notes = ("train: `run_bundle(bundle, 'train', amp=True, amp_dtype=...)` with the `--quick` widths and budgets of "
             "`volgan.evaluation.registry` (a few iterations), on toy volumes (2 of 24^3 for 3D, trained on 24^3 "
             "patches: see `bundle_runs`; 4 of 24x24x6 for the 2D bundles' slices); infer: its `inference.yaml` on "
             "the trained `model.pt` with `amp=True` (the "
             "inference configs autocast in fp16 on CUDA whatever the training dtype: they have no `amp_dtype`). "
             "On CUDA the bundles use fused Adam and the deferred non-finite check (`nonfinite_check_interval` 50).")
    return {"tables": [(["bundle", "amp dtype", "result", "failure", "train s", "inference s", "outputs"], rows,
                        "lllllrr")], "data": data_rows, "failed": failed, "notes": notes}


# --------------------------------------------------------------------------------------------------- b. amp


def section_amp(cfg) -> dict:
    rows, data, failed = [], [], False
    gpu = cfg.device.type == "cuda"
    for key in ("mmgan", "cycleshape"):
        method = METHODS[key](cfg.quick, cfg.device)
        base = None
        for prec in PRECISIONS:
            cell = {"method": method.short, "patch": cfg.patch, "precision": prec}
            why = precision_unavailable(prec, cfg.device)
            if why:
                rows.append([method.short, f"{cfg.patch}^3", prec, f"skipped: {why}", "", "", ""])
                data.append({**cell, "skipped": why})
                continue
            try:
                st = method.build(cfg.patch)
                batches = method.batches(cfg.patch, 1, cfg.warmup + cfg.its)
                trainer = method.trainer(st, batches, **PRECISION_OPTIONS[prec])
                with PeakMemory(cfg.device) as mem:
                    sec = trainer_seconds_per_it(trainer, cfg.warmup, cfg.device)
                base = sec if prec == "fp32" else base
                cell.update(ms=sec * 1000, speedup=(base / sec) if base else None,
                            gpu_peak_mb=mem.gpu_peak_mb, skipped_steps=int(trainer.state.nonfinite_steps))
                rows.append([method.short, f"{cfg.patch}^3", prec, f"{sec * 1000:,.1f}",
                             f"{base / sec:.2f}x" if base else "", f"{mem.gpu_peak_mb:,.0f}" if gpu else "n/a",
                             cell["skipped_steps"]])
            except Exception as exc:  # noqa: BLE001
                failed = True
                cell["error"] = short_error(exc, 300)
                rows.append([method.short, f"{cfg.patch}^3", prec, f"**FAILED**: {short_error(exc)}", "", "", ""])
            data.append(cell)
            print(f"<!-- amp {key} {prec} done -->", flush=True)
    notes = (f"volgan's trainers (`ConditionalGanTrainer`, `CycleShapeTrainer` joint phase) at the bundles' widths"
             f"{' (toy widths: --quick)' if cfg.quick else ''}, batch 1, `amp=True, amp_dtype=...`; ms/step: mean "
             f"over {cfg.its} iterations after {cfg.warmup} warm-up, timed without a host sync inside the run. "
             "Skipped steps: non-finite steps AMP skipped (fp16: GradScaler's first steps at a too-high scale).")
    return {"tables": [(["method", "patch", "precision", "ms/step", "speed-up vs fp32", "GPU peak MB",
                         "skipped steps"], rows, "lllrrrr")], "data": data, "failed": failed, "notes": notes}


# --------------------------------------------------------------------------------------------------- c. mfu


def section_mfu(cfg) -> dict:
    precisions = [p for p in PRECISIONS if not precision_unavailable(p, cfg.device)]
    peaks = measure_peaks(cfg.device, cfg.mm_n, cfg.conv, cfg.peak_reps, dtypes=precisions)
    failed = any("error" in v for v in peaks.values())
    rows, data = [], []
    for prec in precisions:
        try:
            r = step_utilisation("mmgan", cfg.patch, 1, cfg.device, cfg.quick, prec, cfg.warmup, cfg.its, peaks)
            data.append(r)
            rows.append([r["method"], r["patch"], prec, f"{r['gflop_per_step']:,.2f}", f"{r['ms_per_step']:,.1f}",
                         f"{r['achieved_gflops']:,.1f}",
                         *(f"{100 * r[k]:.1f} %" if r[k] is not None else "" for k in ("mfu_vs_conv3d", "mfu_vs_mm"))])
        except Exception as exc:  # noqa: BLE001
            failed = True
            data.append({"precision": prec, "error": short_error(exc, 300)})
            rows.append(["MM-GAN (P1)", f"{cfg.patch}^3", prec, f"**FAILED**: {short_error(exc)}", "", "", "", ""])
        print(f"<!-- mfu {prec} done -->", flush=True)
    notes = ("MFU = achieved FLOP/s / the peak of the same dtype measured above (conv3d: the dense-convolution limit "
             "that bounds a 3D GAN step; mm: the matmul limit). FLOPs: matmuls and convolutions of one trainer "
             "iteration (D step and G step, forward + backward), `torch.utils.flop_counter` rules. Issue #23 goal on "
             "a GPU: MM-GAN G+D step >= 40 % of the bf16 peak. On CUDA fp32 convolutions run in TF32 "
             f"(cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}), fp32 matmuls in IEEE fp32 "
             f"(matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}).")
    return {"tables": [(PEAK_HEADERS, peak_rows(peaks), "lllr"),
                       (["method", "patch", "precision", "GFLOP/step", "ms/step", "achieved GFLOP/s",
                         "MFU vs conv3d peak", "MFU vs mm peak"], rows, "lllrrrrr")],
            "data": {"peaks": {f"{op} {dt}": v for (op, dt), v in peaks.items()}, "steps": data},
            "failed": failed, "notes": notes}


# --------------------------------------------------------------------------------------------------- d. synthesis


def _synthesis_modes(cfg):
    from monai.inferers import sliding_window_inference

    from volgan.inferers import TiledSynthesisInferer

    modes = [("whole volume (one pass)", lambda x, g: g(x))]
    for roi in cfg.rois:
        modes.append((f"volgan tiles {roi}^3 (`TiledSynthesisInferer`)",
                      lambda x, g, r=roi: TiledSynthesisInferer([r] * 3)(x, g)))
        modes.append((f"MONAI `sliding_window_inference` {roi}^3, overlap {cfg.overlap}",
                      lambda x, g, r=roi: sliding_window_inference(x, [r] * 3, 1, g, overlap=cfg.overlap,
                                                                   mode="gaussian")))
    return modes


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[precision])


def section_synthesis(cfg) -> dict:
    gpu = cfg.device.type == "cuda"
    g = synthesis_generator(cfg.quick, cfg.device)
    x = label_input(cfg.shape, cfg.device)
    rows, data, failed = [], [], False
    gflop = None
    with torch.no_grad():
        try:
            gflop = count_flops(lambda: g(x)) / 1e9
        except Exception as exc:  # noqa: BLE001
            failed = True
            data.append({"mode": "FLOP count", "error": short_error(exc, 300)})
        for prec in cfg.synthesis_precisions:
            ref = whole_s = None
            for name, run in _synthesis_modes(cfg):
                cell = {"mode": name, "precision": prec}
                try:
                    with _autocast(cfg.device, prec):
                        if cfg.synthesis_warmup:
                            run(x, g)  # warm-up: kernels, cuDNN autotuning, the allocator's pool
                        with PeakMemory(cfg.device) as mem:
                            clock = DeviceClock(cfg.device)
                            clock.mark()
                            y = run(x, g)
                            clock.mark()
                    sec = clock.seconds()[0]
                    y = y.float().cpu()
                    if ref is None:
                        ref, whole_s = y, sec
                    diff = float((y - ref).abs().max())
                    cell.update(seconds=sec, gpu_peak_mb=mem.gpu_peak_mb,
                                gpu_added_mb=(mem.gpu_peak_mb - mem.gpu_base_mb) if gpu else None,
                                rss_growth_mb=mem.growth_mb, max_abs_diff=diff)
                    rows.append([name, prec, f"{sec:.2f}", f"{sec / whole_s:.2f}",
                                 f"{mem.gpu_peak_mb:,.0f}" if gpu else "n/a",
                                 f"{mem.gpu_peak_mb - mem.gpu_base_mb:,.0f}" if gpu else "n/a",
                                 f"{mem.growth_mb:,.0f}", f"{diff:.4f}",
                                 f"{gflop / sec:,.0f}" if gflop and name.startswith("whole") else ""])
                    del y
                except Exception as exc:  # noqa: BLE001
                    failed = True
                    cell["error"] = short_error(exc, 300)
                    rows.append([name, prec, f"**FAILED**: {short_error(exc)}", "", "", "", "", "", ""])
                data.append(cell)
                print(f"<!-- synthesis {name} {prec} done -->", flush=True)
    shape = "x".join(map(str, cfg.shape))
    timing = "after one warm-up run of the same mode" if cfg.synthesis_warmup else "of a first run (--quick)"
    notes = (f"{shape} random 5-class label map; MM-GAN's generator at {'toy' if cfg.quick else 'the bundle'}'s widths"
             f", running norm statistics (eval), random weights; {gflop or float('nan'):,.1f} GFLOP per whole pass "
             f"(achieved GFLOP/s on the whole-pass row). Times {timing}. Memory: "
             "`torch.cuda.max_memory_allocated` (peak; 'added' = peak minus what the model and input already held) "
             "on CUDA, peak RSS growth on a CPU (n/a for the GPU columns). diff: max abs difference to the one pass "
             "of the same precision (tiles: equal up to rounding; windows: MONAI's default zero padding and "
             "gaussian blending differ at every window border).")
    return {"tables": [(["inference", "precision", "seconds", "time vs one pass", "GPU peak MB", "GPU added MB",
                         "RSS growth MB", "max abs diff vs one pass", "GFLOP/s"], rows, "llrrrrrrr")],
            "data": {"gflop_whole_pass": gflop, "rows": data}, "failed": failed, "notes": notes}


# --------------------------------------------------------------------------------------------------- e. compile


def compile_unavailable() -> str | None:
    """Why ``torch.compile`` cannot run here (None when it can)."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    import importlib

    if not importlib.import_module("torch._dynamo").is_dynamo_supported():
        return f"torch.compile is not supported on Python {sys.version.split()[0]}"
    return None


def section_compile(cfg) -> dict:
    method = METHODS["mmgan"](cfg.quick, cfg.device)
    prec = Precision("bf16" if cfg.device.type == "cuda" else "fp32", cfg.device)
    rows, data = [], []
    why = compile_unavailable()
    base = None
    for variant in ("eager", f"torch.compile(G), backend {cfg.compile_backend}"):
        compiled = variant != "eager"
        if compiled and why:
            rows.append([variant, f"{cfg.patch}^3", prec.kind, f"skipped: {why}", "", ""])
            data.append({"variant": variant, "skipped": why})
            continue
        try:
            st = method.build(cfg.patch)
            if compiled:
                torch._dynamo.reset()
                st.call_g = torch.compile(st.g, backend=cfg.compile_backend)
            batches = method.batches(cfg.patch, 1, cfg.its)
            first = timed_iterations(lambda i: method.bare_step(st, batches[0], prec), 1, cfg.device)[0]
            times = timed_iterations(lambda i: method.bare_step(st, batches[i % len(batches)], prec),
                                     cfg.warmup + cfg.its, cfg.device)[cfg.warmup:]
            ms = median(times) * 1000
            base = ms if not compiled else base
            data.append({"variant": variant, "ms": ms, "first_s": first})
            rows.append([variant, f"{cfg.patch}^3", prec.kind, f"{ms:,.1f}", f"{base / ms:.2f}x" if base else "",
                         f"{first:.1f}"])
        except Exception as exc:  # noqa: BLE001 - volgan does not use compile: a stated skip, not a failure
            data.append({"variant": variant, "skipped": short_error(exc, 300)})
            rows.append([variant, f"{cfg.patch}^3", prec.kind, f"skipped: torch.compile failed: {short_error(exc)}",
                         "", ""])
        print(f"<!-- compile {variant} done -->", flush=True)
    notes = ("The bare MM-GAN G+D step (the same networks, losses and update order as `ConditionalGanTrainer`; "
             "bench_training.py), G compiled; first it s = the first iteration (dynamo + backend compile of the "
             "forward and backward graphs). volgan does not compile by default: a failure here is reported as a "
             "skip with its reason, not as a failed check.")
    return {"tables": [(["variant", "patch", "precision", "ms/step", "speed-up vs eager", "first it s"], rows,
                        "lllrrr")], "data": data, "failed": False, "notes": notes}


# --------------------------------------------------------------------------------------------------- f. sync


def _fused(opt: torch.optim.Adam) -> torch.optim.Adam:
    """The same Adam (parameters, lr, betas), fused: what the bundles build on CUDA."""
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in opt.param_groups]
    return torch.optim.Adam(groups, fused=True)


def section_sync(cfg) -> dict:
    method = METHODS["mmgan"](cfg.quick, cfg.device)
    amp = {"amp": True} if cfg.device.type == "cuda" else {}
    times: dict[int, list[float]] = {1: [], 50: []}
    for _ in range(cfg.sync_rounds):  # interleaved: a load change hits both alike
        for interval in times:
            st = method.build(cfg.patch)
            st.og, st.od = _fused(st.og), _fused(st.od)
            batches = method.batches(cfg.patch, 1, cfg.warmup + cfg.sync_its)
            trainer = method.trainer(st, batches, nonfinite_check_interval=interval, **amp)
            times[interval].append(trainer_seconds_per_it(trainer, cfg.warmup, cfg.device))
        print("<!-- sync round done -->", flush=True)
    t1, t50 = median(times[1]) * 1000, median(times[50]) * 1000
    saved = (t1 - t50) / t1
    verdict = ("keep the deferred check (saves >= 5 % of a step)" if saved >= 0.05 else
               "the deferred check saves < 5 % of a step: issue #23 item 4 says replace it by one per-step check")
    rows = [["1 (a host read of the finite flags every optimiser step)", f"{t1:,.2f}",
             f"{min(times[1]) * 1000:,.2f} .. {max(times[1]) * 1000:,.2f}", ""],
            ["50 (volgan's CUDA default: no host sync in the iteration)", f"{t50:,.2f}",
             f"{min(times[50]) * 1000:,.2f} .. {max(times[50]) * 1000:,.2f}",
             f"{t1 - t50:+,.2f} ms ({100 * saved:+.1f} %)"]]
    notes = (f"MM-GAN `ConditionalGanTrainer`, fused Adam, {'fp16 AMP' if amp else 'fp32'}, {cfg.patch}^3, batch 1; "
             f"ms/step: median over {cfg.sync_rounds} interleaved rounds of {cfg.sync_its} iterations after "
             f"{cfg.warmup} warm-up, timed with {'CUDA events' if amp else 'perf_counter'} and no sync of its own. "
             f"Saved = (interval 1 - interval 50) / interval 1. Verdict{' (CPU: not the question)' if not amp else ''}"
             f": {verdict}.")
    return {"tables": [(["nonfinite_check_interval", "ms/step", "range", "saved per step"], rows, "lrrr")],
            "data": {"interval_1_ms": times[1], "interval_50_ms": times[50], "saved_fraction": saved,
                     "verdict": verdict}, "failed": False, "notes": notes}


# --------------------------------------------------------------------------------------------------- main


RUNNERS = {"bundles": section_bundles, "amp": section_amp, "mfu": section_mfu, "synthesis": section_synthesis,
           "compile": section_compile, "sync": section_sync}


def make_config(args) -> SimpleNamespace:
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    c = SimpleNamespace(device=dev, quick=args.quick, compile_backend=args.compile_backend or "inductor")
    c.bundles = [b for b in args.bundles.split(",") if b] if args.bundles else list(bundle_runs())
    # --quick on a CPU: bf16 only (fp16 AMP is CUDA-only: its rows would only say so)
    dtypes = args.dtypes or ("bfloat16" if args.quick and not gpu else "float16,bfloat16")
    c.dtypes = [d for d in dtypes.split(",") if d]
    if args.quick:
        c.patch = args.patch or 16
        c.warmup, c.its, c.sync_its, c.sync_rounds = 1, 1, 2, 1
        c.mm_n, c.conv, c.peak_reps = 128, (1, 8, 12), 2
        c.shape, c.rois, c.overlap = args.synthesis_shape or [32, 28, 24], [16], 0.25
        if not gpu and args.compile_backend is None:
            c.compile_backend = "eager"  # dynamo's capture without a C++ compile (inductor: a minute on a CPU)
    else:
        c.patch = args.patch or (96 if gpu else 32)
        c.warmup, c.its, c.sync_its, c.sync_rounds = (3, 10, 60, 3) if gpu else (1, 3, 4, 2)
        c.mm_n, c.conv, c.peak_reps = (8192, (4, 64, 64), 10) if gpu else (1536, (1, 32, 32), 3)
        c.shape, c.rois, c.overlap = args.synthesis_shape or [240, 240, 155], [96, 128], 0.25
    c.synthesis_precisions = ["fp32", "fp16", "bf16"] if gpu else ["fp32"]
    c.synthesis_warmup = gpu or not args.quick
    return c


def parse_sections(text: str) -> list[str]:
    out = []
    for tok in filter(None, (t.strip().lower() for t in text.split(","))):
        name = SECTIONS.get(tok, tok)
        if name not in RUNNERS:
            raise SystemExit(f"--sections: unknown section {tok!r}; choose from "
                             f"{', '.join(f'{k} {v}' for k, v in SECTIONS.items())}")
        out.append(name)
    return out


def render(report: dict) -> str:
    letter = {v: k for k, v in SECTIONS.items()}
    out = [f"# GPU check ({report['mode']})", "", report["machine"], "", f"{report['date']}; command: "
           f"`{report['command']}`", ""]
    for name, sec in report["sections"].items():
        status = "ok" if sec["status"] == "ok" else "**FAILED**"
        out += [f"## {letter[name]}. {TITLES[name]} ({status}, {sec['seconds']:.0f} s, CPU {sec['cpu_seconds']:.0f} s)",
                ""]
        if "error" in sec:
            out += [f"**FAILED: {sec['error']}**", "", "```", sec["traceback"].rstrip(), "```", ""]
        for headers, rows, align in sec.get("tables", []):
            out += [md_table(headers, rows, align), ""]
        if sec.get("notes"):
            out += [sec["notes"], ""]
    failed = [n for n, s in report["sections"].items() if s["status"] != "ok"]
    out += [f"**{len(failed)} section(s) FAILED: {', '.join(failed)}**" if failed else "All sections passed.", "",
            f"{report['load']}; total {report['seconds']:.0f} s", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output-dir", required=True, help="gpu_check.md and gpu_check.json are written here")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="toy sizes (seconds on a CPU; the test suite's form)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated letters a-f or names")
    p.add_argument("--patch", type=int, help="3D patch of sections b, c, e, f (default 96 on CUDA, 16 --quick)")
    p.add_argument("--bundles", help="comma-separated bundles of section a (default: all five)")
    p.add_argument("--dtypes", help="amp_dtype values of section a (default float16,bfloat16; bfloat16 with "
                   "--quick on a CPU)")
    p.add_argument("--synthesis-shape", type=int, nargs=3, help="label map of section d (default 240 240 155)")
    p.add_argument("--compile-backend", help="torch.compile backend (default inductor; eager with --quick on a CPU)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (use --device cpu)")
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = parse_sections(args.sections)
    cfg = make_config(args)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {"mode": "quick" if args.quick else "full", "machine": machine_line(cfg.device),
              "date": time.strftime("%Y-%m-%d %H:%M"),
              "command": "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "sections": {}}
    t0 = time.perf_counter()
    for name in sections:
        ts, cpu = time.perf_counter(), time.process_time()
        try:
            sec = RUNNERS[name](cfg)
            sec["status"] = "failed" if sec.pop("failed") else "ok"
        except Exception as exc:  # noqa: BLE001 - one section's bug must not hide the others
            sec = {"status": "failed", "error": short_error(exc, 300), "traceback": traceback.format_exc(limit=12)}
        if cfg.device.type == "cuda":
            torch.cuda.empty_cache()
        sec["seconds"], sec["cpu_seconds"] = time.perf_counter() - ts, time.process_time() - cpu
        report["sections"][name] = sec
        print(f"<!-- section {name}: {sec['status']} ({sec['seconds']:.0f} s) -->", flush=True)
    report["seconds"] = time.perf_counter() - t0
    report["load"] = load_line()
    report["failed"] = [n for n, s in report["sections"].items() if s["status"] != "ok"]
    text = render(report)
    print(text)
    (out_dir / "gpu_check.md").write_text(text, encoding="utf-8")
    json_report = {**report, "sections": {n: {k: v for k, v in s.items() if k != "tables"} | {
        "tables": [{"headers": h, "rows": [[str(c) for c in r] for r in rows]} for h, rows, _ in s.get("tables", [])]}
        for n, s in report["sections"].items()}}
    (out_dir / "gpu_check.json").write_text(json.dumps(json_report, indent=1, default=str), encoding="utf-8")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
