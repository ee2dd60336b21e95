"""MM-GAN benchmark: trainer overhead vs a bare PyTorch loop, and whole-volume synthesis (sliding window vs one pass).

    python benchmarks/bench_mmgan.py            # full: 32^3 and 48^3 training patches, 240x240x155 synthesis
    python benchmarks/bench_mmgan.py --quick    # small sizes (smoke test, seconds)

Prints Markdown tables. Every figure is compared with a baseline measured in the same run (ratios), so the
tables are comparable across machines; absolute times are shown for context only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine_line, sync as _sync  # noqa: E402


def _nets(channels, disc_channels, device):
    from volgan.networks import PatchDiscriminator, SNUNetGenerator

    torch.manual_seed(0)
    g = SNUNetGenerator(3, 5, 1, channels=channels).to(device)
    d = PatchDiscriminator(3, 1, 5, channels=disc_channels).to(device)
    return g, d


def _batch(size, device, n):
    gen = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 5, (n, size, size, size), generator=gen)
    cond = torch.nn.functional.one_hot(lab, 5).permute(0, 4, 1, 2, 3).float()
    real = torch.rand(n, 1, size, size, size, generator=gen) * 2 - 1
    return [{"cond": cond[i : i + 1].to(device), "image": real[i : i + 1].to(device)} for i in range(n)]


def bench_training(size, iters, device, channels, disc_channels, amp=False):
    """ms per iteration: volgan's ConditionalGanTrainer vs the same step written as a bare loop."""
    from volgan.engines import ConditionalGanTrainer, ImagePool
    from volgan.losses import LSGANLoss

    data = _batch(size, device, iters)
    # bare loop: the same networks, losses, pool and update order, no engine
    g, d = _nets(channels, disc_channels, device)
    og, od = (torch.optim.Adam(m.parameters(), 4e-4 if m is g else 1e-4, betas=(0.0, 0.9)) for m in (g, d))
    pool, adv = ImagePool(4, seed=0), LSGANLoss()
    for warm in (True, False):
        _sync(device)
        t0 = time.perf_counter()
        for b in data[:2] if warm else data:
            cond, real = b["cond"], b["image"]
            fake = g(cond)
            fd, cd = pool.query(fake.detach(), cond)
            ld = adv(d(real, cond), True, True) + adv(d(fd, cd), False, True)
            od.zero_grad(set_to_none=True)
            ld.backward()
            od.step()
            for p in d.parameters():
                p.requires_grad_(False)
            lg = adv(d(fake, cond), True, False)
            og.zero_grad(set_to_none=True)
            lg.backward()
            og.step()
            for p in d.parameters():
                p.requires_grad_(True)
        _sync(device)
        bare = (time.perf_counter() - t0) / len(data) * 1000
    g, d = _nets(channels, disc_channels, device)
    og, od = (torch.optim.Adam(m.parameters(), 4e-4 if m is g else 1e-4, betas=(0.0, 0.9)) for m in (g, d))
    trainer = ConditionalGanTrainer(device, 1, data[:2], g, d, og, od, pool=ImagePool(4, seed=0), amp=amp)
    trainer.run()  # warm-up
    trainer = ConditionalGanTrainer(device, 1, data, g, d, og, od, pool=ImagePool(4, seed=0), amp=amp)
    _sync(device)
    t0 = time.perf_counter()
    trainer.run()
    _sync(device)
    engine = (time.perf_counter() - t0) / len(data) * 1000
    return bare, engine


def _sample_label_map(shape):
    """A realistic label map of ``shape``: an embedded sample case (brain + simulated tumour), nearest-resized."""
    import tempfile

    import nibabel as nib

    from volgan.data.samples import make_sample_cases

    with tempfile.TemporaryDirectory() as tmp:
        item = json.loads(make_sample_cases(tmp, cases_per_subject=1, subjects=("mni152",)).read_text(encoding="utf-8"))["training"][0]
        lab = torch.as_tensor(np.asarray(nib.load(os.path.join(tmp, item["label"])).dataobj)).long()
    return torch.nn.functional.interpolate(lab[None, None].float(), size=shape, mode="nearest")[0].long()


def _synth_child(args):
    """Run in a subprocess: one synthesis configuration; prints JSON with time and peak memory."""

    from volgan.inferers import sliding_window_inferer as make_inferer

    device = torch.device(args.device)
    shape = tuple(args.shape)
    g, _ = _nets(args.channels, [8, 8, 8], device)
    if args.ckpt:
        from volgan.io import load_weights

        load_weights(g, args.ckpt, device)
    g.eval()
    lab = _sample_label_map(shape)
    x = torch.nn.functional.one_hot(lab, 5).permute(0, 4, 1, 2, 3).float().to(device)
    if args.budget_mb:  # the memory this pass may add on top of what is allocated now (model, input)
        if device.type == "cuda":
            used = torch.cuda.memory_allocated(device)
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, (used + args.budget_mb * 2**20) / total), device)
        else:
            vm_data = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmData:"))
            limit = int(vm_data * 1024 + args.budget_mb * 2**20)
            resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, enabled=args.amp and device.type == "cuda"):
        if args.roi:
            y = make_inferer(args.roi, 1, args.overlap)(x, g)
        else:
            y = g(x)
    _sync(device)
    dt = time.perf_counter() - t0
    out = {"seconds": dt, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    np.save(args.save, y.float().cpu().numpy()[0, 0])
    print(json.dumps(out))


def bench_synthesis(shape, configs, device, channels, tmpdir, amp=False, ckpt=None, budget_mb=None):
    rows = []
    for name, roi, overlap in configs:
        save = os.path.join(tmpdir, f"{name}.npy")
        cmd = [sys.executable, __file__, "--child", "--device", str(device), "--shape", *map(str, shape),
               "--channels", *map(str, channels), "--overlap", str(overlap), "--save", save]
        if budget_mb:
            cmd += ["--budget-mb", str(int(budget_mb))]
        if roi:
            cmd += ["--roi", *map(str, roi)]
        if amp:
            cmd.append("--amp")
        if ckpt:
            cmd += ["--ckpt", str(ckpt)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            rows.append({"name": name, "error": (r.stderr.strip().splitlines() or ["failed"])[-1][:120]})
            continue
        res = json.loads(r.stdout.strip().splitlines()[-1])
        res["name"], res["save"] = name, save
        rows.append(res)
    ref = next((r for r in rows if r["name"] == "whole volume" and "error" not in r), None)
    ref_arr = np.load(ref["save"]) if ref else None
    for r in rows:
        if "error" in r or ref is None:
            continue
        r["time_ratio"] = r["seconds"] / ref["seconds"]
        r["mem_ratio"] = r["rss_growth_mb"] / max(ref["rss_growth_mb"], 1e-6)
        r["max_abs_diff"] = float(np.abs(np.load(r["save"]) - ref_arr).max())
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", type=int, nargs=3)
    p.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--roi", type=int, nargs=3)
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--save")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--ckpt", help="trained MM-GAN generator (model.pt) for the synthesis table; default: random init")
    p.add_argument("--budget-mb", type=float, help=argparse.SUPPRESS)  # child: memory the pass may add
    p.add_argument("--synthesis-only", action="store_true", help="skip the training table")
    args = p.parse_args()
    if args.child:
        return _synth_child(args)
    import tempfile

    device = torch.device(args.device)
    print(f"# MM-GAN benchmark\n\n{machine_line(device)}\n")
    channels = [4, 8, 16, 32] if args.quick else [16, 32, 64, 128]
    disc = [8, 16, 16] if args.quick else [64, 128, 256]
    sizes = [16] if args.quick else ([32, 48] if device.type == "cpu" else [64, 96, 128])
    iters = 3 if args.quick else (8 if device.type == "cpu" else 20)
    if not args.synthesis_only:
        print("## Training iteration: volgan trainer vs bare PyTorch loop (same networks, losses, pool)\n")
        print("| patch | bare loop ms/it | volgan ms/it | overhead | voxels/s (volgan) |")
        print("|---|---:|---:|---:|---:|")
        for s in sizes:
            bare, eng = bench_training(s, iters, device, channels, disc)
            print(f"| {s}^3 | {bare:.0f} | {eng:.0f} | {100 * (eng / bare - 1):+.1f} % | {s**3 / (eng / 1000):,.0f} |")
        if device.type == "cuda":
            print("\n## AMP (fp16 + GradScaler) vs fp32, volgan trainer\n\n| patch | fp32 ms/it | AMP ms/it | speed-up |\n|---|---:|---:|---:|")
            for s in sizes:
                _, f32 = bench_training(s, iters, device, channels, disc, amp=False)
                _, f16 = bench_training(s, iters, device, channels, disc, amp=True)
                print(f"| {s}^3 | {f32:.0f} | {f16:.0f} | {f32 / f16:.2f}x |")
    shape = [48, 48, 32] if args.quick else [240, 240, 155]
    configs = [("whole volume", None, 0.0)]
    rois = [[24, 24, 24]] if args.quick else [[96, 96, 96], [128, 128, 128]]
    for roi in rois:
        for ov in ((0.25,) if args.quick else (0.25, 0.5)):
            configs.append((f"window {roi[0]}^3, overlap {ov}", roi, ov))
    print(f"\n## Whole-volume synthesis of a {'x'.join(map(str, shape))} label map (generator {channels}, "
          f"{'weights ' + args.ckpt if args.ckpt else 'random weights'})\n")
    print("| inference | seconds | time vs whole | peak RSS MB | RSS growth MB | memory vs whole | max abs diff vs whole |"
          + (" GPU peak MB |" if device.type == "cuda" else ""))
    print("|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if device.type == "cuda" else ""))
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_synthesis(shape, configs, device, channels, tmp, ckpt=args.ckpt)
        for r in rows:
            if "error" in r:
                print(f"| {r['name']} | failed: {r['error']} | | | | | |")
                continue
            gpu = f" {r['gpu_peak_mb']:.0f} |" if "gpu_peak_mb" in r else ""
            print(f"| {r['name']} | {r['seconds']:.1f} | {r['time_ratio']:.2f} | {r['peak_rss_mb']:.0f} | "
                  f"{r['rss_growth_mb']:.0f} | {r['mem_ratio']:.2f} | {r['max_abs_diff']:.3f} |{gpu}")
    print("\nmax abs diff: on the generator's [-1, 1] output scale; windows differ from one pass because instance "
          "norm statistics are per window and windows are blended.")
    whole = next((r for r in rows if r["name"] == "whole volume" and "error" not in r), None)
    if whole is None or args.quick:  # quick: too small for allocator granularity to leave room for a window
        return
    # a memory budget of half what one whole-volume pass adds: the pass cannot fit, the windows still must
    budget = 0.5 * (whole.get("gpu_peak_mb") or whole["rss_growth_mb"])
    print(f"\n## The same volume under a memory budget of {budget:.0f} MB (half of what one whole-volume pass "
          f"needs; {'torch.cuda.set_per_process_memory_fraction' if device.type == 'cuda' else 'RLIMIT_DATA'})\n")
    print("| inference | result | seconds |\n|---|---|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for r in bench_synthesis(shape, configs[:2], device, channels, tmp, ckpt=args.ckpt, budget_mb=budget):
            result = f"out of memory ({r['error'][:60]})" if "error" in r else "fits"
            secs = "" if "error" in r else f"{r['seconds']:.1f}"
            print(f"| {r['name']} | {result} | {secs} |")


if __name__ == "__main__":
    main()
