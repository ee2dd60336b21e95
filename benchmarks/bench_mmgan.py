"""MM-GAN benchmark: trainer overhead vs a bare PyTorch loop (whole-volume synthesis: ``bench_seams.py``).

    python benchmarks/bench_mmgan.py            # full: 32^3 and 48^3 training patches
    python benchmarks/bench_mmgan.py --quick    # small sizes (smoke test, seconds)

Prints Markdown tables. Every figure is compared with a baseline measured in the same run (ratios), so the
tables are comparable across machines; absolute times are shown for context only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"# MM-GAN benchmark\n\n{machine_line(device)}\n")
    channels = [4, 8, 16, 32] if args.quick else [16, 32, 64, 128]
    disc = [8, 16, 16] if args.quick else [64, 128, 256]
    sizes = [16] if args.quick else ([32, 48] if device.type == "cpu" else [64, 96, 128])
    iters = 3 if args.quick else (8 if device.type == "cpu" else 20)
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
    print("\nWhole-volume synthesis (windows vs tiles vs one pass, seams, memory): benchmarks/bench_seams.py")


if __name__ == "__main__":
    main()
