"""Seams of whole-volume synthesis (issue #19): before / after in one run, with one trained MM-GAN generator.

    python benchmarks/bench_seams.py                 # 240x240x155 label map, generator trained here (minutes)
    python benchmarks/bench_seams.py --ckpt OUT/model.pt   # a generator trained with the bundle (norm_stats running)
    python benchmarks/bench_seams.py --quick         # small sizes (smoke test, seconds)
    python benchmarks/bench_seams.py --figure docs/figures/p1_seams.png

One generator is trained (the bundle's train.yaml on the embedded sample data, 32^3 patches) and synthesises the
same label map in two inference modes, each in its own process:

- **before** (P1 as published, volgan until issue #19): instance norm with each input's own statistics, MONAI's
  blended sliding windows; every window is normalised by different statistics.
- **after** (volgan now): instance norm with the running statistics kept in training; ``TiledSynthesisInferer``
  runs every U-Net block in tiles on the grid of the whole pass.

For each: time, peak memory over what the model and input already take, max / mean absolute difference to one
whole-volume pass of the same mode, and the seam index inside the brain (mean step across the window / tile borders
/ mean step between neighbours elsewhere; 1 = invisible). Ratios to the same-mode whole pass, so tables compare
across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import load_line, machine_line, md_table, sync  # noqa: E402


def smooth_label_map(shape):
    """An embedded sample case (brain + simulated tumour) resized to ``shape`` smoothly: each label's one-hot channel
    trilinearly, then the argmax (nearest resizing would add staircase steps of its own on a 5x upsampling)."""
    import nibabel as nib

    from volgan.data.samples import make_sample_cases

    with tempfile.TemporaryDirectory() as tmp:
        item = json.loads(make_sample_cases(tmp, cases_per_subject=1, subjects=("mni152",)).read_text(
            encoding="utf-8"))["training"][0]
        lab = torch.as_tensor(np.asarray(nib.load(os.path.join(tmp, item["label"])).dataobj)).long()
    onehot = torch.nn.functional.one_hot(lab, 5).permute(3, 0, 1, 2)[None].float()
    return torch.nn.functional.interpolate(onehot, size=tuple(shape), mode="trilinear", align_corners=False)[0].argmax(0)


def train_generator(out_dir, epochs, channels, patch):
    """MM-GAN's bundle trained on the embedded sample data; returns its model.pt."""
    from volgan.bundle import run_bundle

    run_bundle("mmgan_label2mri_3d", "train", dataset_dir="sample", output_dir=out_dir, max_epochs=int(epochs),
               patch_size=[patch] * 3, gen_channels=list(channels), device="cpu", amp=False)
    return os.path.join(out_dir, "model.pt")


def _generator(ckpt, norm_stats, channels, device):
    """The trained generator in inference mode ``norm_stats``: the same weights; ``instance`` ignores the running
    statistics (P1's per-input instance norm)."""
    from volgan.networks import SNUNetGenerator

    g = SNUNetGenerator(3, 5, 1, channels=channels, norm_stats=norm_stats)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if k in g.state_dict()}  # instance: no running buffers
    g.load_state_dict(state)
    return g.to(device).eval()


def _child(args):
    """One configuration in its own process (peak memory is per process); prints JSON, saves the output."""
    from volgan.inferers import TiledSynthesisInferer, sliding_window_inferer

    device = torch.device(args.device)
    g = _generator(args.ckpt, args.norm_stats, args.channels, device)
    x = torch.nn.functional.one_hot(smooth_label_map(args.shape), 5).permute(3, 0, 1, 2)[None].float().to(device)
    if args.budget_mb:  # the memory this pass may add on top of what is allocated now (model, input)
        vm_data = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmData:"))
        limit = int(vm_data * 1024 + args.budget_mb * 2**20)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1]))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with torch.no_grad():
        if args.inferer == "whole":
            y = g(x)
        elif args.inferer == "tiled":
            y = TiledSynthesisInferer(args.roi)(x, g)
        else:
            y = sliding_window_inferer(args.roi, 1, args.overlap)(x, g)
    sync(device)
    out = {"seconds": time.perf_counter() - t0,
           "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024}
    if device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    np.save(args.save, y.float().cpu().numpy()[0, 0])
    print(json.dumps(out))


def _run(cfg, args, ckpt, tmp, budget_mb=None):
    save = os.path.join(tmp, "".join(c if c.isalnum() else "_" for c in f"{cfg['norm_stats']}_{cfg['name']}") + ".npy")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--device", args.device, "--ckpt", ckpt,
           "--shape", *map(str, args.shape), "--channels", *map(str, args.channels), "--save", save,
           "--norm-stats", cfg["norm_stats"], "--inferer", cfg["inferer"], "--overlap", str(cfg.get("overlap", 0))]
    if cfg.get("roi"):
        cmd += ["--roi", *map(str, cfg["roi"])]
    if budget_mb:
        cmd += ["--budget-mb", str(int(budget_mb))]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return {**cfg, "error": (r.stderr.strip().splitlines() or ["failed"])[-1][:100]}
    return {**cfg, **json.loads(r.stdout.strip().splitlines()[-1]), "save": save}


def _borders(cfg, shape):
    from volgan.evaluation import tile_borders, window_borders

    if cfg["inferer"] == "tiled":
        return tile_borders(shape, cfg["roi"])
    return window_borders(shape, cfg["roi"], cfg["overlap"])


def figure(path, rows, label_map):
    """Three planes through the centre of each volume, the window / tile grid drawn on (red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shape = label_map.shape
    c = [s // 2 for s in shape]
    fig, axes = plt.subplots(len(rows), 3, figsize=(10, 3.4 * len(rows)), squeeze=False)
    for i, (title, vol, borders) in enumerate(rows):
        for j, (plane, axes_2d) in enumerate((("axial", (0, 1)), ("coronal", (0, 2)), ("sagittal", (1, 2)))):
            sl = [slice(None)] * 3
            sl[3 - sum(axes_2d)] = c[3 - sum(axes_2d)]
            ax = axes[i][j]
            ax.imshow(vol[tuple(sl)].T, cmap="gray", origin="lower", vmin=-1, vmax=1)
            for b in borders[axes_2d[0]]:
                ax.axvline(b - 0.5, color="red", lw=0.6, alpha=0.7)
            for b in borders[axes_2d[1]]:
                ax.axhline(b - 0.5, color="red", lw=0.6, alpha=0.7)
            ax.set_title(f"{title}: {plane}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--ckpt", help="MM-GAN generator model.pt (trained with norm_stats running); default: train one")
    p.add_argument("--epochs", type=int, default=16, help="epochs of the generator trained here")
    p.add_argument("--figure", help="write the three-plane figure with the window/tile grid here (PNG)")
    p.add_argument("--save-generator", help="keep the generator trained here (model.pt + model.json) at this path")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shape", type=int, nargs=3)
    p.add_argument("--channels", type=int, nargs="+")
    p.add_argument("--norm-stats", default="running", help=argparse.SUPPRESS)
    p.add_argument("--inferer", default="whole", help=argparse.SUPPRESS)
    p.add_argument("--roi", type=int, nargs=3, help=argparse.SUPPRESS)
    p.add_argument("--overlap", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--save", help=argparse.SUPPRESS)
    p.add_argument("--budget-mb", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return _child(args)
    from volgan.evaluation import seam_index
    from volgan.io import trained_with

    args.shape = args.shape or ([48, 40, 36] if args.quick else [240, 240, 155])
    rois = [[24, 24, 24]] if args.quick else [[96, 96, 96], [128, 128, 128]]
    overlaps = (0.25,) if args.quick else (0.25, 0.5)
    print(f"# Seams of whole-volume synthesis (MM-GAN)\n\n{machine_line(torch.device(args.device))}\n{load_line()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None:
            epochs = 1 if args.quick else args.epochs
            channels = [4, 8, 16, 32] if args.quick else [16, 32, 64, 128]
            t0 = time.perf_counter()
            ckpt = train_generator(os.path.join(tmp, "train"), epochs, channels, 16 if args.quick else 32)
            if args.save_generator:
                from volgan.io import weights_sidecar

                os.makedirs(os.path.dirname(os.path.abspath(args.save_generator)), exist_ok=True)
                shutil.copy(ckpt, args.save_generator)
                shutil.copy(weights_sidecar(ckpt), weights_sidecar(args.save_generator))
            print(f"generator: mmgan_label2mri_3d train.yaml on the embedded sample data, {epochs} epochs, "
                  f"{16 if args.quick else 32}^3 patches, channels {channels}, seed 0 ({time.perf_counter() - t0:.0f} s)\n")
        else:
            print(f"generator: {ckpt}\n")
        args.channels = args.channels or list(trained_with(ckpt, "channels", [16, 32, 64, 128]))
        configs = [{"setting": "before (P1)", "norm_stats": "instance", "inferer": "whole", "name": "whole volume"}]
        configs += [{"setting": "before (P1)", "norm_stats": "instance", "inferer": "windows", "roi": r, "overlap": o,
                     "name": f"windows {r[0]}^3, overlap {o}"} for r in rois for o in overlaps]
        configs += [{"setting": "after (volgan)", "norm_stats": "running", "inferer": "whole", "name": "whole volume"}]
        configs += [{"setting": "after (volgan)", "norm_stats": "running", "inferer": "tiled", "roi": r,
                     "name": f"tiles {r[0]}^3"} for r in rois]
        configs += [{"setting": "running stats only", "norm_stats": "running", "inferer": "windows", "roi": rois[0],
                     "overlap": overlaps[-1], "name": f"windows {rois[0][0]}^3, overlap {overlaps[-1]}"}]
        rows = [_run(c, args, ckpt, tmp) for c in configs]
        lab = smooth_label_map(args.shape).numpy()
        brain = lab > 0
        table = []
        for r in rows:
            if "error" in r:
                table.append([r["setting"], r["name"], f"failed: {r['error']}", "", "", "", "", "", "", ""])
                continue
            whole = next(w for w in rows if w["inferer"] == "whole" and w["norm_stats"] == r["norm_stats"])
            vol, ref = np.load(r["save"]), np.load(whole["save"])
            grid = _borders(r, args.shape) if r["inferer"] != "whole" else _borders(configs[1], args.shape)
            r["seam"], seam_whole = seam_index(vol, grid, brain), seam_index(ref, grid, brain)
            diff = np.abs(vol - ref)
            table.append([r["setting"], r["name"], f"{r['seconds']:.1f}", f"{r['seconds'] / whole['seconds']:.2f}",
                          f"{r['rss_growth_mb']:.0f}", f"{r['rss_growth_mb'] / max(whole['rss_growth_mb'], 1e-6):.2f}",
                          f"{diff.max():.3f}", f"{diff[brain].mean():.4f}", f"{r['seam']:.3f}", f"{seam_whole:.3f}"]
                         + ([f"{r['gpu_peak_mb']:.0f}"] if "gpu_peak_mb" in r else []))
        gpu = ["GPU peak MB"] if any("gpu_peak_mb" in r for r in rows) else []
        print(f"## {'x'.join(map(str, args.shape))} label map, the same weights in both settings\n")
        print(md_table(["setting", "inference", "seconds", "time vs whole", "RSS growth MB", "memory vs whole",
                        "max abs diff vs whole", "mean abs diff (brain)", "seam index (brain)",
                        "whole pass, same grid"] + gpu, table, "ll" + "r" * (8 + len(gpu))))
        print("\ndiff: on the generator's [-1, 1] scale, to one whole-volume pass of the same setting. Seam index: "
              "on the row's window / tile grid (whole-pass rows: the first windows' grid), beside the same index of "
              "the whole pass on that grid (what the anatomy alone gives). Gaussian blending spreads a window "
              "difference over the overlap, so blended windows show it in the diff more than in the border step.")
        if args.figure:
            pick = [r for r in rows if "error" not in r and r["inferer"] != "whole"]
            before = next(r for r in pick if r["norm_stats"] == "instance")
            after = next(r for r in pick if r["inferer"] == "tiled")
            whole = next(r for r in rows if r["inferer"] == "whole" and r["norm_stats"] == "running")
            figure(args.figure, [(f"before: {before['name']} (seam {before['seam']:.2f})", np.load(before["save"]),
                                  _borders(before, args.shape)),
                                 (f"after: {after['name']} (seam {after['seam']:.2f})", np.load(after["save"]),
                                  _borders(after, args.shape)),
                                 ("after: one whole-volume pass (tile grid for reference)", np.load(whole["save"]),
                                  _borders(after, args.shape))], lab)
            print(f"\nfigure: {args.figure}")
        whole = next((r for r in rows if r["inferer"] == "whole" and r["norm_stats"] == "running" and "error" not in r),
                     None)
        if whole is None or args.quick:  # quick: too small for allocator granularity to leave room for a tile
            return
        budget = 0.5 * whole["rss_growth_mb"]
        print(f"\n## Under a memory budget of {budget:.0f} MB (half of what one whole-volume pass adds; RLIMIT_DATA)\n")
        res = [_run(c, args, ckpt, tmp, budget) for c in configs if c["norm_stats"] == "running"
               and c["inferer"] in ("whole", "tiled")]
        print(md_table(["inference", "result", "seconds"],
                       [[r["name"], f"out of memory ({r['error'][:60]})" if "error" in r else "fits",
                         "" if "error" in r else f"{r['seconds']:.1f}"] for r in res], "llr"))


if __name__ == "__main__":
    main()
