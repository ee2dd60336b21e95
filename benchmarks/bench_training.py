"""Training benchmark of volgan's adversarial trainers: throughput, precision / memory format / torch.compile,
data loading, and scaling with patch and batch size.

    python benchmarks/bench_training.py                 # default: a few minutes on 2 CPU cores
    python benchmarks/bench_training.py --quick         # small widths and sizes (smoke test, seconds)
    python benchmarks/bench_training.py --full          # paper batch sizes, larger patches (long on a CPU)
    python benchmarks/bench_training.py --device cuda   # on a GPU: fp16 + GradScaler, GPU peak memory
    python benchmarks/bench_training.py --sections throughput,data

Sections (``--sections``, names or numbers):
  1 ``throughput``: iterations/s and voxels/s of each method's trainer (MM-GAN ``ConditionalGanTrainer``, cycle/shape
    ``CycleShapeTrainer``, P5 ``WganGpTrainer``, P4 ``PairCriticWganGpTrainer``) vs the same step written as a bare
    PyTorch loop over the same networks, losses and update order (the engine's overhead).
  2 ``precision``: fp32 vs bf16 autocast (fp16 + GradScaler on CUDA), channels-last memory format, torch.compile of
    the generator (compile time reported apart from the steady state), in the bare loop.
  3 ``data``: plain ``Dataset`` + ``DataLoader`` vs ``CacheDataset`` (+ ``ThreadDataLoader``) over the MM-GAN
    bundle's training transforms on NIfTI files (the embedded sample cases); share of the step spent waiting for data.
  4 ``scaling``: step time and peak memory of the MM-GAN trainer vs patch size and batch size, fitted exponent.
  5 ``spectral``: cost of spectral normalisation in the MM-GAN trainer: one power iteration per optimiser step
    (volgan: D's two passes of the D step share it) vs one per forward pass (plain parametrizations) vs no SN.

Each section prints a Markdown table; every figure that matters is a ratio to a baseline measured in the same run.
Times are medians over iterations after warm-up; networks are built at the bundles' (paper) widths except with
``--quick``. Other processes on the machine add noise: the load average is printed with each section.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    PeakMemory,
    fit_exponent,
    load_line,
    machine_line,
    md_table,
    median,
    short_error,
    sync,
    timed_iterations,
)

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("throughput", "precision", "data", "scaling", "spectral")


# --------------------------------------------------------------------------------------------------- precision


class Precision:
    """How the bare loop runs a step: ``fp32``, ``bf16`` (autocast, no scaler) or ``fp16`` (autocast + one
    GradScaler per optimiser, CUDA), mirroring ``AdversarialTrainerBase``."""

    def __init__(self, kind: str, device: torch.device):
        self.kind, self.device = kind, device
        self.dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(kind)
        self.scalers: dict[str, torch.amp.GradScaler] = {}

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, name: str, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        if self.kind == "fp16" and self.device.type == "cuda":
            scaler = self.scalers.setdefault(name, torch.amp.GradScaler("cuda"))
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()


# --------------------------------------------------------------------------------------------------- methods


def _memory_format(dims: int):
    return torch.channels_last_3d if dims == 3 else torch.channels_last


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class Method:
    """One training scheme: networks at the bundle's widths, a batch maker, the bare-loop step and the trainer."""

    key = title = ""
    dims = 3

    def __init__(self, quick: bool, device: torch.device):
        self.quick, self.device = quick, device

    def build(self, size: int, channels_last: bool = False, compile_g: bool = False) -> SimpleNamespace:
        torch.manual_seed(0)
        st = self._build(size)
        for name in self.net_names:
            net = getattr(st, name).to(self.device)
            if channels_last:
                net.to(memory_format=_memory_format(self.dims))
            setattr(st, name, net)
        self._optimisers(st)
        st.channels_last = channels_last
        for name in self.gen_names:  # the callables the bare loop uses for the generators
            net = getattr(st, name)
            setattr(st, "call_" + name, torch.compile(net) if compile_g else net)
        return st

    def to_device(self, batch: dict, channels_last: bool) -> dict:
        out = {}
        for k, v in batch.items():
            v = v.to(self.device)
            if channels_last and v.ndim == self.dims + 2:
                v = v.contiguous(memory_format=_memory_format(self.dims))
            out[k] = v
        return out

    def voxels(self, size: int, batch: int) -> int:
        return batch * size**self.dims


class MMGAN(Method):
    key, title, dims = "mmgan", "MM-GAN (P1), `ConditionalGanTrainer`", 3
    short = "MM-GAN (P1)"
    net_names, gen_names = ("g", "d"), ("g",)

    def widths(self):
        # bundles/mmgan_label2mri_3d/configs/train.yaml: gen_channels, disc_channels, disc_strides
        return ([4, 8, 16, 32], [8, 16, 16]) if self.quick else ([16, 32, 64, 128], [64, 128, 256])

    def _build(self, size):
        from volgan.engines import ImagePool
        from volgan.losses import LSGANLoss
        from volgan.networks import PatchDiscriminator, SNUNetGenerator

        gch, dch = self.widths()
        sn = getattr(self, "spectral", True)
        return SimpleNamespace(g=SNUNetGenerator(3, 5, 1, channels=gch, spectral=sn),
                               d=PatchDiscriminator(3, 1, 5, channels=dch, spectral=sn),
                               pool=ImagePool(4, seed=0), adv=LSGANLoss())

    def _optimisers(self, st):
        st.og = torch.optim.Adam(st.g.parameters(), 4e-4, betas=(0.0, 0.9))
        st.od = torch.optim.Adam(st.d.parameters(), 1e-4, betas=(0.0, 0.9))

    def batches(self, size, batch, n, channels_last=False, seed=0):
        gen = _seeded(seed)
        out = []
        for _ in range(n):
            lab = torch.randint(0, 5, (batch, size, size, size), generator=gen)
            cond = torch.nn.functional.one_hot(lab, 5).permute(0, 4, 1, 2, 3).float()
            real = torch.rand(batch, 1, size, size, size, generator=gen) * 2 - 1
            out.append(self.to_device({"cond": cond, "image": real}, channels_last))
        return out

    def bare_step(self, st, b, prec):
        from volgan.engines import set_requires_grad

        cond, real = b["cond"], b["image"]
        with prec.autocast():
            fake = st.call_g(cond)
        fd, cd = st.pool.query(fake.detach(), cond)
        with prec.autocast():
            ld = st.adv(st.d(real, cond), True, True) + st.adv(st.d(fd, cd), False, True)
        prec.step("d", ld, st.od)
        set_requires_grad(st.d, False)
        with prec.autocast():
            lg = st.adv(st.d(fake, cond), True, False)
        prec.step("g", lg, st.og)
        set_requires_grad(st.d, True)

    def trainer(self, st, data, **kw):
        from volgan.engines import ConditionalGanTrainer

        return ConditionalGanTrainer(self.device, 1, data, st.g, st.d, st.og, st.od, pool=st.pool, **kw)


class CycleShape(Method):
    key, title, dims = "cycleshape", "cycle/shape (P2), `CycleShapeTrainer` (joint phase)", 3
    short = "cycle/shape (P2)"
    net_names, gen_names = ("g_a", "g_b", "d_a", "d_b", "s_a", "s_b"), ("g_a", "g_b")

    def widths(self):
        # bundles/cycleshape_ct_mri_3d/configs/train.yaml: gen_channels, disc_channels/strides, seg_channels
        if self.quick:
            return [4, 8, 16, 16], [8, 16, 16], [2, 2, 1], [4, 8, 16, 32]
        return [32, 64, 256, 256], [64, 128, 256, 512], [2, 2, 2, 1], [32, 64, 128, 256]

    def _build(self, size):
        from volgan.engines import ImagePool
        from volgan.losses import CycleConsistencyLoss, LSGANLoss, ShapeConsistencyLoss
        from volgan.networks import PatchDiscriminator, cycle_generator, make_segmentor

        gch, dch, dstr, sch = self.widths()

        def disc():
            return PatchDiscriminator(3, 1, 0, dch, dstr, norm="instance", spectral=False)

        return SimpleNamespace(
            g_a=cycle_generator(3, 1, 1, gch), g_b=cycle_generator(3, 1, 1, gch), d_a=disc(), d_b=disc(),
            s_a=make_segmentor("unet", 3, 1, 5, sch), s_b=make_segmentor("unet", 3, 1, 5, sch),
            pool_a=ImagePool(50, seed=0), pool_b=ImagePool(50, seed=1), adv=LSGANLoss(),
            cycle=CycleConsistencyLoss(10.0), shape=ShapeConsistencyLoss(1.0))

    def _optimisers(self, st):
        betas = (0.5, 0.999)
        st.og = torch.optim.Adam(list(st.g_a.parameters()) + list(st.g_b.parameters()), 2e-4, betas=betas)
        st.od = torch.optim.Adam(list(st.d_a.parameters()) + list(st.d_b.parameters()), 2e-4, betas=betas)
        st.os = torch.optim.Adam(list(st.s_a.parameters()) + list(st.s_b.parameters()), 2e-4)

    def batches(self, size, batch, n, channels_last=False, seed=0):
        gen = _seeded(seed)
        shape = (batch, 1, size, size, size)
        return [self.to_device({
            "a_image": torch.rand(shape, generator=gen) * 2 - 1, "a_label": torch.randint(0, 5, shape, generator=gen),
            "b_image": torch.rand(shape, generator=gen) * 2 - 1, "b_label": torch.randint(0, 5, shape, generator=gen),
        }, channels_last) for _ in range(n)]

    @staticmethod
    def _mix(rx, ry, sx, sy):
        n = rx.shape[0]
        if n == 1:
            return torch.cat([rx, sx]), torch.cat([ry, sy])
        k = int(round(n * 0.5))
        return torch.cat([rx[: n - k], sx[:k]]), torch.cat([ry[: n - k], sy[:k]])

    def bare_step(self, st, b, prec):
        import torch.nn.functional as F

        from volgan.engines import set_requires_grad

        x_a, y_a, x_b, y_b = b["a_image"], b["a_label"], b["b_image"], b["b_label"]
        gs, ds, ss = (st.g_a, st.g_b), (st.d_a, st.d_b), (st.s_a, st.s_b)
        set_requires_grad((*ds, *ss), False)
        set_requires_grad(gs, True)
        with prec.autocast():  # G step: adversarial + cycle + shape consistency, D and S frozen
            fake_b, fake_a = st.call_g_b(x_a), st.call_g_a(x_b)
            rec_a, rec_b = st.call_g_a(fake_b), st.call_g_b(fake_a)
            g_adv = st.adv(st.d_b(fake_b), True, False) + st.adv(st.d_a(fake_a), True, False)
            g_loss = (g_adv + st.cycle((rec_a, x_a), (rec_b, x_b))
                      + st.shape((st.s_b(fake_b), y_a), (st.s_a(fake_a), y_b)))
        prec.step("g", g_loss, st.og)
        set_requires_grad(gs, False)
        set_requires_grad(ss, True)  # S step: half real, half synthetic
        xa, ya = self._mix(x_a, y_a, fake_a.detach().float(), y_b)
        xb, yb = self._mix(x_b, y_b, fake_b.detach().float(), y_a)
        with prec.autocast():
            la, lb = st.s_a(xa), st.s_b(xb)
        s_loss = F.cross_entropy(la.float(), ya[:, 0]) + F.cross_entropy(lb.float(), yb[:, 0])
        prec.step("s", s_loss, st.os)
        set_requires_grad(ds, True)  # D step: real vs pooled fakes
        pa, _ = st.pool_a.query(fake_a.detach())
        pb, _ = st.pool_b.query(fake_b.detach())
        with prec.autocast():
            d_loss = (st.adv(st.d_a(x_a), True, True) + st.adv(st.d_a(pa), False, True)
                      + st.adv(st.d_b(x_b), True, True) + st.adv(st.d_b(pb), False, True))
        prec.step("d", d_loss, st.od)
        set_requires_grad((*gs, *ss), True)

    def trainer(self, st, data, **kw):
        from volgan.engines import CycleShapeTrainer

        return CycleShapeTrainer(self.device, 1, data, st.g_a, st.g_b, st.d_a, st.d_b, st.s_a, st.s_b, st.og, st.od,
                                 st.os, mode="ours", pool_size=50, seed=0, **kw)


class WganPairs(Method):
    key, title, dims = "wgan_p5", "WGAN-GP pairs (P5), `WganGpTrainer`", 2
    short = "WGAN-GP pairs (P5)"
    net_names, gen_names = ("g", "d"), ("g",)
    latent = 100

    def widths(self):
        # bundles/wgan_pairs_seg_2d/configs/train.yaml: gen_channels, critic_channels
        return (32, 8) if self.quick else (512, 64)

    def _build(self, size):
        from volgan.losses import GradientPenalty, WassersteinLoss
        from volgan.networks import DCGANCritic, PairGenerator

        gch, dch = self.widths()
        return SimpleNamespace(g=PairGenerator(2, self.latent, size, gch), d=DCGANCritic(2, 2, size, dch),
                               w=WassersteinLoss(), gp=GradientPenalty(10.0), noise=_seeded(0))

    def _optimisers(self, st):
        st.og = torch.optim.Adam(st.g.parameters(), 1e-4, betas=(0.5, 0.9))
        st.od = torch.optim.Adam(st.d.parameters(), 1e-4, betas=(0.5, 0.9))

    def batches(self, size, batch, n, channels_last=False, seed=0):
        gen = _seeded(seed)
        shape = (batch, 1, size, size)
        return [self.to_device({"image": torch.rand(shape, generator=gen) * 2 - 1,
                                "label": torch.randint(0, 2, shape, generator=gen)}, channels_last) for _ in range(n)]

    def _real(self, b, st):
        from volgan.data import to_pair

        real = to_pair(b["image"], b["label"])
        return (real.contiguous(memory_format=torch.channels_last) if st.channels_last else real), None, None

    def _fake(self, st, source, n):
        return st.call_g(torch.randn(n, self.latent, generator=st.noise).to(self.device))

    def bare_step(self, st, b, prec):
        from volgan.engines import set_requires_grad

        real, cond, source = self._real(b, st)
        n = real.shape[0]

        def score(x):
            return st.d(x) if cond is None else st.d(x, cond)

        set_requires_grad(st.d, True)  # critic step: W distance + gradient penalty (fp32)
        with torch.no_grad(), prec.autocast():
            fake = self._fake(st, source, n)
        with prec.autocast():
            w = st.w(score(fake.float()), False) + st.w(score(real), True)
        gp = st.gp(st.d, real, fake, cond=cond)
        prec.step("d", w + gp, st.od)
        set_requires_grad(st.d, False)  # generator step (n_critic = 1)
        with prec.autocast():
            g_loss = st.w(score(self._fake(st, source, n)), True)
        prec.step("g", g_loss, st.og)
        set_requires_grad(st.d, True)

    def trainer(self, st, data, **kw):
        from volgan.engines import WganGpTrainer

        return WganGpTrainer(self.device, 1, data, st.g, st.d, st.og, st.od, latent_dim=self.latent, n_critic=1,
                             gp_weight=10.0, seed=0, **kw)


class AdversarialUNet(WganPairs):
    key, title, dims = "wgan_p4", "adversarial U-Net (P4), `PairCriticWganGpTrainer`", 2
    short = "adversarial U-Net (P4)"

    def widths(self):
        # bundles/adversarial_unet_aug_2d/configs/train.yaml: generator and DenseNet critic widths
        if self.quick:
            return dict(gen=[8, 16, 32, 32], noise=4, convs=2, feat=8, growth=8, blocks=[2, 2, 2, 2])
        return dict(gen=[64, 128, 256, 256], noise=16, convs=4, feat=64, growth=64, blocks=[4, 4, 4, 4])

    def _build(self, size):
        from volgan.losses import GradientPenalty, WassersteinLoss
        from volgan.networks import AdversarialUNetGenerator, DenseNetCritic

        w = self.widths()
        g = AdversarialUNetGenerator(2, 2, 2, w["gen"], self.latent, w["noise"], 0.2, "batchrenorm", w["convs"],
                                     [size, size])
        d = DenseNetCritic(2, 4, w["feat"], w["growth"], w["blocks"], dropout=0.2,
                           stem_stride=max(1, min(4, size // 64)))
        return SimpleNamespace(g=g, d=d, w=WassersteinLoss(), gp=GradientPenalty(10.0), noise=_seeded(0))

    def _optimisers(self, st):
        st.og = torch.optim.Adam(st.g.parameters(), 1e-4, betas=(0.0, 0.9))
        st.od = torch.optim.Adam(st.d.parameters(), 1e-4, betas=(0.0, 0.9))

    def batches(self, size, batch, n, channels_last=False, seed=0):
        gen = _seeded(seed)
        shape = (batch, 1, size, size)
        return [self.to_device({f"{k}_{s}": (torch.rand(shape, generator=gen) * 2 - 1 if k == "image"
                                             else torch.randint(0, 2, shape, generator=gen))
                                for s in ("i", "j") for k in ("image", "label")}, channels_last) for _ in range(n)]

    def _real(self, b, st):
        from volgan.data import to_pair

        x_i, x_j = (to_pair(b[f"image_{s}"], b[f"label_{s}"]) for s in ("i", "j"))
        if st.channels_last:
            x_i, x_j = (x.contiguous(memory_format=torch.channels_last) for x in (x_i, x_j))
        return x_j, x_i, x_j  # (real second image, fixed first image, G's source)

    def _fake(self, st, source, n):
        return st.call_g(source, torch.randn(n, self.latent, generator=st.noise).to(self.device))

    def trainer(self, st, data, **kw):
        from volgan.engines import PairCriticWganGpTrainer

        return PairCriticWganGpTrainer(self.device, 1, data, st.g, st.d, st.og, st.od, latent_dim=self.latent,
                                       n_critic=1, gp_weight=10.0, seed=0, **kw)


METHODS = {m.key: m for m in (MMGAN, CycleShape, WganPairs, AdversarialUNet)}


# --------------------------------------------------------------------------------------------------- timing


def run_trainer(trainer, device, data_wait: bool = False) -> tuple[list[float], list[float]]:
    """Run an ignite trainer; seconds per iteration (between consecutive ITERATION_COMPLETED, the first from the first
    GET_BATCH_STARTED) and, with ``data_wait``, seconds per iteration spent in ``next(loader)``."""
    from ignite.engine import Events

    stamps: list[float] = []
    waits: list[float] = []
    started: list[float] = []

    def on_get_started(_):
        t = time.perf_counter()
        if not stamps:
            sync(device)
            stamps.append(time.perf_counter())
        started.append(t)

    def on_get_completed(_):
        waits.append(time.perf_counter() - started[-1])

    def on_iteration(_):
        sync(device)
        stamps.append(time.perf_counter())

    trainer.add_event_handler(Events.GET_BATCH_STARTED, on_get_started)
    if data_wait:
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, on_get_completed)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, on_iteration)
    trainer.run()
    return [b - a for a, b in zip(stamps, stamps[1:])], waits


class Plan:
    """Iteration counts for a mode: ``warmup`` untimed iterations, then enough timed iterations to fill ``budget_s``
    seconds per measurement (between ``min_its`` and ``max_its``)."""

    def __init__(self, warmup: int, min_its: int, max_its: int, budget_s: float):
        self.warmup, self.min_its, self.max_its, self.budget_s = warmup, min_its, max_its, budget_s

    def iterations(self, seconds_per_it: float) -> int:
        return int(max(self.min_its, min(self.max_its, self.budget_s // max(seconds_per_it, 1e-6))))


def spread(xs) -> float:
    """(max - min) / median: 0 for identical values; the noise of a set of timings or ratios."""
    return (max(xs) - min(xs)) / median(xs) if len(xs) > 1 else float("inf")


def _fmt_ms(s: float) -> str:
    ms = s * 1000
    return f"{ms:,.0f}" if ms >= 100 else f"{ms:.1f}"


# --------------------------------------------------------------------------------------------------- section 1


def section_throughput(cfg) -> None:
    print("## 1. Training throughput: volgan trainer vs bare PyTorch loop\n")
    print(load_line() + "\n")
    rows = []
    for key, sizes, batch in cfg.throughput:
        method = METHODS[key](cfg.quick, cfg.device)
        for size in sizes:
            label = f"{size}^{method.dims}"
            try:
                st = method.build(size)
                prec = Precision("fp32", cfg.device)
                n_data = cfg.plan.max_its
                data = method.batches(size, batch, n_data)
                warm = timed_iterations(lambda i: method.bare_step(st, data[i % n_data], prec), cfg.plan.warmup,
                                        cfg.device)
                run_trainer(method.trainer(st, data[:1]), cfg.device)  # the engine's first run (lazy imports...)
                n_pairs = cfg.plan.iterations(warm[-1])
                bare, eng, ratios = [], [], []
                t_start = time.perf_counter()
                # paired: one bare iteration, then one trainer iteration on the same batch, so that a change of the
                # machine's load hits both alike; more pairs (up to max_its, within twice the budget) when noisy
                while True:
                    b = data[len(bare) % n_data]
                    bare += timed_iterations(lambda i: method.bare_step(st, b, prec), 1, cfg.device)
                    eng += run_trainer(method.trainer(st, [b]), cfg.device)[0]
                    ratios.append(eng[-1] / bare[-1])
                    if len(bare) >= n_pairs and (len(bare) >= cfg.plan.max_its or spread(ratios) < 0.2
                                                 or time.perf_counter() - t_start > 2 * cfg.plan.budget_s):
                        break
                b, e = median(bare), median(eng)
                rows.append([method.title, label, batch, _fmt_ms(b), _fmt_ms(e),
                             f"{100 * (median(ratios) - 1):+.1f} %",
                             f"{100 * (min(ratios) - 1):+.0f} .. {100 * (max(ratios) - 1):+.0f} %",
                             f"{1 / e:.2f}", f"{method.voxels(size, batch) / e:,.0f}", len(bare)])
            except Exception as exc:  # noqa: BLE001 - a table cell, not a crash
                rows.append([method.title, label, batch, f"failed: {short_error(exc)}", "", "", "", "", "", ""])
            print(f"<!-- {rows[-1][0]} {label}: done -->", flush=True)
    print()
    print(md_table(["method", "patch", "batch", "bare loop ms/it", "volgan ms/it", "engine overhead",
                    "overhead range", "it/s (volgan)", "voxels/s (volgan)", "pairs"], rows, "llrrrrrrrr"))
    print("\nbare loop / volgan ms/it: medians over the timed pairs; engine overhead = median over the pairs of "
          "volgan / bare - 1 (each pair: one bare iteration, then one trainer iteration on the same batch), "
          "overhead range = smallest .. largest pair (the noise); 2D: voxels = pixels. Per iteration: P1 one D and "
          "one G step; P2 (joint phase) one G, one S and one D step; P4/P5 one critic step (with gradient penalty) "
          "and one G step (n_critic 1).\n")


# --------------------------------------------------------------------------------------------------- section 2


def _fuse_optimisers(st) -> None:
    """Rebuild every Adam of a built method as ``fused=True`` (what the bundles do on CUDA)."""
    for name, opt in list(vars(st).items()):
        if isinstance(opt, torch.optim.Adam):
            groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in opt.param_groups]
            setattr(st, name, torch.optim.Adam(groups, fused=True))


def _variant_rows(cfg, method, size, batch, variants):
    rows, base = [], []
    for name, kind, opts in variants:
        cell = {"name": name}
        try:
            if kind == "trainer":
                opts = dict(opts)
                st = method.build(size)
                if opts.pop("fused", False):
                    _fuse_optimisers(st)
                data = method.batches(size, batch, cfg.plan.warmup + cfg.plan.max_its)
                times = run_trainer(method.trainer(st, data, **opts), cfg.device)[0][cfg.plan.warmup:]
                cell.update(ms=median(times), first=None, its=len(times))
            else:
                threads = torch.get_num_threads()
                if opts.get("threads"):
                    torch.set_num_threads(opts["threads"])
                st = method.build(size, channels_last=opts.get("cl", False), compile_g=opts.get("compile", False))
                prec = Precision(opts.get("prec", "fp32"), cfg.device)
                data = method.batches(size, batch, cfg.plan.max_its, channels_last=opts.get("cl", False))
                step = lambda i: method.bare_step(st, data[i % len(data)], prec)  # noqa: E731
                first = timed_iterations(step, 1, cfg.device)[0]
                warm = timed_iterations(step, max(cfg.plan.warmup - 1, 0) + (1 if opts.get("compile") else 0),
                                        cfg.device)
                probe = warm[-1] if warm else first
                times = timed_iterations(step, cfg.plan.iterations(probe), cfg.device)
                torch.set_num_threads(threads)
                cell.update(ms=median(times), first=first, its=len(times), warm=warm)
        except Exception as exc:  # noqa: BLE001
            cell["error"] = short_error(exc)
        torch.set_num_threads(cfg.threads)
        if name.startswith("fp32") and "error" not in cell:
            base.append(cell["ms"])
        rows.append(cell)
        print(f"<!-- {method.key} {size}: {name} done -->", flush=True)
    ref = sum(base) / len(base) if base else float("nan")
    out = []
    label = f"{size}^{method.dims}"
    for c in rows:
        if "error" in c:
            out.append([method.short, label, batch, c["name"], f"failed: {c['error']}", "", "", ""])
            continue
        first = "" if c["first"] is None else f"{c['first']:.1f}"
        compile_s = ""
        if "compile" in c["name"] and c["first"] is not None:
            # first iterations minus as many steady-state ones: the compile time (forward + backward graphs)
            extra = c["first"] + sum(c.get("warm", [])) - (1 + len(c.get("warm", []))) * c["ms"]
            compile_s = f"{extra:.1f}"
        out.append([method.short, label, batch, c["name"], _fmt_ms(c["ms"]), f"{ref / c['ms']:.2f}x", first, compile_s])
    return out


def section_precision(cfg) -> None:
    dev = cfg.device
    print("## 2. Precision, memory format and torch.compile (bare loop of the same step)\n")
    print(load_line() + "\n")
    from volgan.config import amp_enabled

    trainer_amp = amp_enabled(True, dev)
    rows = []
    compiled = False
    for key, size, batch, with_compile in cfg.precision:
        method = METHODS[key](cfg.quick, dev)
        cl = "channels_last_3d" if method.dims == 3 else "channels_last"
        variants = [("fp32 (baseline)", "bare", {})]
        if dev.type == "cuda":
            variants += [("fp16 autocast + GradScaler", "bare", {"prec": "fp16"}),
                         ("bf16 autocast", "bare", {"prec": "bf16"}),
                         ("volgan trainer amp=True (fp16)", "trainer", {"amp": True}),
                         ("volgan trainer amp=True, amp_dtype bf16", "trainer", {"amp": True, "amp_dtype": "bfloat16"})]
        else:
            variants += [("bf16 autocast (CPU)", "bare", {"prec": "bf16"}),
                         ("volgan trainer fp32", "trainer", {}),
                         ("volgan trainer amp=True, amp_dtype bf16 (CPU)", "trainer",
                          {"amp": True, "amp_dtype": "bfloat16"})]
        amp = {"amp": True} if dev.type == "cuda" else {}
        variants += [("volgan trainer, host check of every step (interval 1)", "trainer",
                      {**amp, "nonfinite_check_interval": 1}),
                     ("volgan trainer, fused Adam, check every 50 its (no sync)", "trainer",
                      {**amp, "fused": True, "nonfinite_check_interval": 50})]
        variants += [(cl, "bare", {"cl": True})]
        if dev.type == "cpu" and cfg.threads > 1:
            variants += [(f"1 thread instead of {cfg.threads}", "bare", {"threads": 1})]
        if cfg.compile and with_compile:
            variants += [("torch.compile(G)", "bare", {"compile": True})]
            compiled = True
        variants += [("fp32 (repeat)", "bare", {})]
        rows += _variant_rows(cfg, method, size, batch, variants)
    if not compiled:
        rows.append(["(all)", "", "", "torch.compile(G)", "skipped (--quick / --no-compile)", "", "", ""])
    print()
    print(md_table(["method", "patch", "batch", "variant", "ms/it", "speed-up vs fp32", "first it s", "compile s"],
                   rows, "llrlrrrr"))
    print("\nspeed-up = mean of the two fp32 runs / variant (median ms per iteration after warm-up). "
          f"volgan's trainers "
          f"{'use' if trainer_amp else 'ignore'} `amp=True` alone on this device "
          f"(fp16 AMP is CUDA-only){'' if trainer_amp else '; with amp_dtype bfloat16 they autocast to bf16 on a CPU too'}. "
          "Host check of every step = the trainers' default on a CPU (one host read of a finite flag per optimiser "
          "step); fused Adam + check every 50 iterations = their default on CUDA (the bundles build fused Adam "
          "there; the skip of a non-finite step happens on the device, no host sync in the iteration). "
          "compile s = first iterations minus as many steady ones (dynamo + inductor, forward and backward graphs; "
          "much less when the inductor cache already holds the kernels).\n")


# --------------------------------------------------------------------------------------------------- section 3


def _mmgan_transforms(patch: int):
    """The MM-GAN bundle's training transforms (``train#preprocessing`` of its train.yaml) at ``patch``^3."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / "mmgan_label2mri_3d" / "configs" / "train.yaml"))
    parser.update({"patch_size": [patch] * 3})
    return parser.get_parsed_content("train#preprocessing")


def section_data(cfg) -> None:
    from monai.data import CacheDataset, DataLoader, Dataset, ThreadDataLoader

    from volgan.data.samples import make_sample_cases

    print("## 3. Data loading: share of the MM-GAN training step spent waiting for data\n")
    print(load_line() + "\n")
    patch, n_per_subject = cfg.data_patch, cfg.data_cases
    method = MMGAN(cfg.quick, cfg.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        listing = json.loads(make_sample_cases(tmp, cases_per_subject=n_per_subject).read_text(encoding="utf-8"))
        items = [{k: os.path.join(tmp, v) if k in ("image", "label") else v for k, v in it.items()}
                 for it in listing["training"]]
        shape = None
        configs = [
            ("Dataset + DataLoader (workers 0)", "plain", lambda ds: DataLoader(ds, batch_size=1, shuffle=True)),
            ("Dataset + DataLoader (workers 2)", "plain",
             lambda ds: DataLoader(ds, batch_size=1, shuffle=True, num_workers=2)),
            ("CacheDataset + DataLoader (workers 0, bundle)", "cache",
             lambda ds: DataLoader(ds, batch_size=1, shuffle=True)),
            ("CacheDataset + ThreadDataLoader", "cache",
             lambda ds: ThreadDataLoader(ds, batch_size=1, shuffle=True, num_workers=0, buffer_size=1)),
        ]
        res = []
        for name, kind, make_loader in configs:
            try:
                xf = _mmgan_transforms(patch)
                t0 = time.perf_counter()
                ds = (CacheDataset(items, xf, cache_rate=1.0, num_workers=0, progress=False) if kind == "cache"
                      else Dataset(items, xf))
                build = time.perf_counter() - t0
                loader = make_loader(ds)
                t_load = []  # the loader alone, no training
                t0 = time.perf_counter()
                for batch in loader:
                    t_load.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                shape = tuple(batch["image"].shape[2:])
                st = method.build(patch)
                steps, waits = [], []
                for _ in range(cfg.data_epochs):
                    s, w = run_trainer(method.trainer(st, loader), cfg.device, data_wait=True)
                    steps += s[1:]  # the first iteration of an epoch starts workers / fills buffers
                    waits += w[1:]
                res.append(dict(name=name, build=build, load=median(t_load[1:] or t_load), step=sum(steps) / len(steps),
                                wait=sum(waits) / len(waits), frac=sum(waits) / sum(steps), n=len(steps)))
            except Exception as exc:  # noqa: BLE001
                res.append(dict(name=name, error=short_error(exc)))
            print(f"<!-- data {name}: done -->", flush=True)
    base = next((r for r in res if "error" not in r), None)
    for r in res:
        if "error" in r:
            rows.append([r["name"], f"failed: {r['error']}", "", "", "", "", "", ""])
            continue
        rows.append([r["name"], f"{r['build']:.2f}", _fmt_ms(r["load"]), _fmt_ms(r["step"]), _fmt_ms(r["wait"]),
                     f"{100 * r['frac']:.1f} %", f"{r['step'] / base['step']:.2f}", r["n"]])
    print()
    print(f"{len(items)} sample cases (NIfTI, {shape and 'cropped to ' + 'x'.join(map(str, shape))}), bundle "
          f"transforms: LoadImaged, ValidateVolumed, ForegroundNormalized, SpatialPadd, RandCropByLabelClassesd "
          f"({patch}^3), AsDiscreted (one-hot); MM-GAN networks at {'quick' if cfg.quick else 'paper'} widths, "
          f"batch 1, {cfg.data_epochs} epoch(s).\n")
    print(md_table(["loader", "dataset build s", "loader alone ms/batch", "train step ms", "data wait ms/step",
                    "wait share of step", "step vs plain", "its"], rows, "lrrrrrrr"))
    print("\nwait = time in `next(loader)` (ignite GET_BATCH_STARTED -> COMPLETED) per iteration; step = whole "
          "iteration (mean, first iteration of each epoch excluded); target: wait share < 5 %.\n")


# --------------------------------------------------------------------------------------------------- section 4


def _scaling_point(cfg, method, size, batch):
    st = method.build(size)
    n = cfg.scale_warmup + cfg.scale_its
    data = method.batches(size, batch, n)
    with PeakMemory(cfg.device) as mem:
        times = run_trainer(method.trainer(st, data), cfg.device)[0][cfg.scale_warmup:]
        for _ in range(cfg.scale_repeats):  # noisy (another process took the cores): measure again, pool all
            if spread(times) < 0.2:
                break
            times += run_trainer(method.trainer(st, data[: cfg.scale_its]), cfg.device)[0]
    return median(times), mem, spread(times)


def section_scaling(cfg) -> None:
    print("## 4. Scaling: MM-GAN trainer step time and peak memory vs patch and batch size\n")
    print(load_line() + "\n")
    method = MMGAN(cfg.quick, cfg.device)
    gpu = cfg.device.type == "cuda"
    points = []
    for size in cfg.scale_sizes:
        try:
            t, mem, sp = _scaling_point(cfg, method, size, 1)
            points.append(dict(size=size, batch=1, t=t, mem=mem, spread=sp))
        except Exception as exc:  # noqa: BLE001
            points.append(dict(size=size, batch=1, error=short_error(exc)))
        print(f"<!-- scaling {size}^3 done -->", flush=True)
    bpoints = []
    for b in cfg.scale_batches:
        p = next((q for q in points if q["size"] == cfg.scale_batch_size and b == 1 and "error" not in q), None)
        if p is None:
            try:
                t, mem, sp = _scaling_point(cfg, method, cfg.scale_batch_size, b)
                p = dict(size=cfg.scale_batch_size, batch=b, t=t, mem=mem, spread=sp)
            except Exception as exc:  # noqa: BLE001
                p = dict(size=cfg.scale_batch_size, batch=b, error=short_error(exc))
        bpoints.append(p)
        print(f"<!-- scaling batch {b} done -->", flush=True)

    def mem_cells(p):
        m = p["mem"]
        cells = [f"{m.growth_mb:,.0f}"]
        if gpu:
            cells.append(f"{m.gpu_peak_mb:,.0f}")
        return cells

    mem_head = ["peak RSS growth MB"] + (["GPU peak MB"] if gpu else [])
    ok = [p for p in points if "error" not in p]
    rows = []
    for i, p in enumerate(points):
        if "error" in p:
            rows.append([f"{p['size']}^3", f"{p['size'] ** 3:,}", f"failed: {p['error']}"] + [""] * (5 + gpu))
            continue
        j = ok.index(p)
        local = local_m = ""
        if j > 0:
            q = ok[j - 1]
            local = f"{math.log(p['t'] / q['t']) / math.log(p['size'] ** 3 / q['size'] ** 3):.2f}"
            mq, mp = ((x["mem"].gpu_peak_mb if gpu else x["mem"].growth_mb) for x in (q, p))
            if mq > 0 and mp > 0:
                local_m = f"{math.log(mp / mq) / math.log(p['size'] ** 3 / q['size'] ** 3):.2f}"
        rows.append([f"{p['size']}^3", f"{p['size'] ** 3:,}", _fmt_ms(p["t"]), f"{100 * p['spread']:.0f} %",
                     f"{p['size'] ** 3 / p['t']:,.0f}", local] + mem_cells(p) + [local_m])
    print(md_table(["patch (batch 1)", "voxels", "ms/it", "spread", "voxels/s", "local time exponent"] + mem_head
                   + ["local memory exponent"], rows))
    if len(ok) >= 2:
        e_all = fit_exponent([p["size"] ** 3 for p in ok], [p["t"] for p in ok])
        big = ok[len(ok) // 2:] if len(ok) >= 4 else ok
        e_big = fit_exponent([p["size"] ** 3 for p in big], [p["t"] for p in big])
        mems = [(p["size"] ** 3, p["mem"].gpu_peak_mb if gpu else p["mem"].growth_mb) for p in ok]
        mems = [(v, m) for v, m in mems if m > 0]
        e_mem = fit_exponent([v for v, _ in mems], [m for _, m in mems]) if len(mems) >= 2 else float("nan")
        print(f"\nfitted exponent, time ~ voxels^k: k = {e_all:.2f} over {ok[0]['size']}^3..{ok[-1]['size']}^3, "
              f"k = {e_big:.2f} over {big[0]['size']}^3..{big[-1]['size']}^3; memory ~ voxels^{e_mem:.2f}. "
              "k = 1 is linear; k < 1 where fixed per-iteration costs (kernel launches, Python, optimiser steps over "
              "the parameters) dominate small patches.")
    brows = []
    b1 = next((p for p in bpoints if p.get("batch") == 1 and "error" not in p), None)
    for p in bpoints:
        if "error" in p:
            brows.append([p["batch"], f"failed: {p['error']}"] + [""] * (4 + gpu))
            continue
        rel = f"{p['t'] / b1['t']:.2f}" if b1 else ""
        per_sample = f"{p['t'] / p['batch'] / b1['t']:.2f}" if b1 else ""
        brows.append([p["batch"], _fmt_ms(p["t"]), f"{100 * p['spread']:.0f} %", rel, per_sample] + mem_cells(p))
    print(f"\nbatch size at {cfg.scale_batch_size}^3:\n")
    print(md_table(["batch", "ms/it", "spread", "time vs batch 1", "time per sample vs batch 1"] + mem_head, brows))
    print(f"\n{'GPU peak = torch.cuda.max_memory_allocated; ' if gpu else ''}peak RSS growth = peak resident memory "
          "during the run minus the resident memory before it (networks and batches already allocated; freed heap "
          "returned with malloc_trim first): activations, gradients and optimiser state. ms/it: median of "
          f"{cfg.scale_its} iterations after {cfg.scale_warmup} warm-up, measured again (up to {cfg.scale_repeats} "
          "times, all pooled) while spread = (max - min) / median >= 20 %.\n")


# --------------------------------------------------------------------------------------------------- section 5


@contextlib.contextmanager
def _count_power_iterations(counter: dict, owner: dict):
    """Count spectral-norm power iterations (``_SpectralNorm.forward`` calls in training mode) per network:
    ``owner`` maps id(parametrization) -> network name."""
    from torch.nn.utils.parametrizations import _SpectralNorm

    orig = _SpectralNorm.forward

    def counting(self, weight):
        if self.training:
            counter[owner[id(self)]] = counter.get(owner[id(self)], 0) + 1
        return orig(self, weight)

    _SpectralNorm.forward = counting
    try:
        yield
    finally:
        _SpectralNorm.forward = orig


@contextlib.contextmanager
def _uncached_spectral_norm():
    """The trainer as before the change: every D forward pass runs its own power iteration."""
    from torch.nn.utils import parametrize

    cached = parametrize.cached
    parametrize.cached = contextlib.nullcontext
    try:
        yield
    finally:
        parametrize.cached = cached


def section_spectral(cfg) -> None:
    print("## 5. Spectral normalisation cost (MM-GAN `ConditionalGanTrainer`)\n")
    print(load_line() + "\n")
    size, n = cfg.sn_size, cfg.plan.warmup + cfg.sn_its
    variants = [("SN, one power iteration per optimiser step (volgan)", True, contextlib.nullcontext),
                ("SN, one power iteration per forward pass (before)", True, _uncached_spectral_norm),
                ("no spectral norm", False, contextlib.nullcontext)]
    times: dict[str, list[float]] = {v[0]: [] for v in variants}
    counts: dict[str, dict[str, float]] = {}
    for _ in range(cfg.sn_rounds):  # interleaved rounds: a load change hits every variant alike
        for name, sn, ctx in variants:
            method = METHODS["mmgan"](cfg.quick, cfg.device)
            method.spectral = sn
            st = method.build(size)
            owner = {id(m): k for k, net in (("G", st.g), ("D", st.d)) for m in net.modules()
                     if type(m).__name__ == "_SpectralNorm"}
            counter: dict[str, int] = {}
            with ctx(), _count_power_iterations(counter, owner):
                t = run_trainer(method.trainer(st, method.batches(size, 1, n)), cfg.device)[0]
            times[name] += t[cfg.plan.warmup:]
            layers = {k: sum(v == k for v in owner.values()) for k in ("G", "D")}
            counts[name] = {k: counter.get(k, 0) / n / layers[k] if layers[k] else 0.0 for k in ("G", "D")}
            print(f"<!-- spectral {name} done -->", flush=True)
    base = median(times[variants[-1][0]])
    before = median(times[variants[1][0]])
    rows = []
    for name, sn, _ in variants:
        ms = median(times[name])
        rows.append([name, f"{size}^3", _fmt_ms(ms), f"{counts[name]['G']:g}", f"{counts[name]['D']:g}",
                     f"{100 * (ms / base - 1):+.1f} %", f"{before / ms:.3f}x", len(times[name])])
    print(md_table(["variant", "patch", "ms/it", "power its per G layer per it", "power its per D layer per it",
                    "vs no SN", "speed-up vs before", "timed its"], rows, "llrrrrrr"))
    print("\nPer iteration the trainer makes one G forward, two D forwards for the D step and one for the G step. "
          "ms/it: median over all rounds (interleaved). Widths: the bundle's (G 16-128, D 64-128-256).\n")


# --------------------------------------------------------------------------------------------------- main


def make_config(args) -> SimpleNamespace:
    dev = torch.device(args.device)
    gpu = dev.type == "cuda"
    c = SimpleNamespace(device=dev, quick=args.quick, compile=args.compile, threads=args.threads)
    if args.quick:
        c.plan = Plan(warmup=1, min_its=1, max_its=1, budget_s=0)
        c.throughput = [("mmgan", [16], 1), ("cycleshape", [16], 1), ("wgan_p5", [32], 2), ("wgan_p4", [32], 2)]
        c.precision = [("mmgan", 16, 1, True), ("wgan_p5", 32, 2, True)]
        c.data_patch, c.data_cases, c.data_epochs = 16, 1, 1
        c.scale_sizes, c.scale_batches, c.scale_batch_size = [16, 24], [1, 2], 16  # 16^3: the U-Net's minimum
        c.scale_warmup, c.scale_its, c.scale_repeats = 1, 1, 0
        c.sn_size, c.sn_its, c.sn_rounds = 16, 2, 1
    elif args.full:
        c.plan = Plan(warmup=2, min_its=3, max_its=10, budget_s=60)
        s3 = [32, 64, 96] + ([128] if gpu else [])
        c.throughput = [("mmgan", s3, 1), ("cycleshape", s3, 1), ("wgan_p5", [64, 128, 256], 16),
                        ("wgan_p4", [64, 128, 256], 16)]
        c.precision = [("mmgan", 64, 1, True), ("cycleshape", 32, 1, True), ("wgan_p5", 128, 16, True),
                       ("wgan_p4", 128, 16, True)]
        c.data_patch, c.data_cases, c.data_epochs = 64, 4, 2
        c.scale_sizes = [16, 24, 32, 48, 64, 96, 128] + ([160, 192] if gpu else [])
        c.scale_batches, c.scale_batch_size = [1, 2, 4], 64
        c.scale_warmup, c.scale_its, c.scale_repeats = 2, 5, 2
        c.sn_size, c.sn_its, c.sn_rounds = 64, 5, 3
    elif gpu:
        c.plan = Plan(warmup=3, min_its=5, max_its=20, budget_s=10)
        c.throughput = [("mmgan", [32, 64, 96], 1), ("cycleshape", [32, 64, 96], 1), ("wgan_p5", [64, 128, 256], 16),
                        ("wgan_p4", [64, 128, 256], 16)]
        c.precision = [("mmgan", 64, 1, True), ("cycleshape", 64, 1, True), ("wgan_p5", 128, 16, True),
                       ("wgan_p4", 128, 16, True)]
        c.data_patch, c.data_cases, c.data_epochs = 64, 4, 2
        c.scale_sizes, c.scale_batches, c.scale_batch_size = [16, 32, 48, 64, 96, 128], [1, 2, 4], 64
        c.scale_warmup, c.scale_its, c.scale_repeats = 3, 10, 1
        c.sn_size, c.sn_its, c.sn_rounds = 64, 10, 3
    else:  # default on a CPU: a few minutes on 2 cores; the expensive methods at their smallest sizes only
        c.plan = Plan(warmup=1, min_its=2, max_its=8, budget_s=12)
        c.throughput = [("mmgan", [32, 64], 1), ("cycleshape", [32], 1), ("wgan_p5", [64, 128], 4),
                        ("wgan_p4", [64], 1)]
        c.precision = [("mmgan", 32, 1, True), ("wgan_p5", 64, 4, False)]  # compile: minutes per graph on a CPU
        c.data_patch, c.data_cases, c.data_epochs = 32, 4, 1
        c.scale_sizes, c.scale_batches, c.scale_batch_size = [16, 24, 32, 48, 64], [1, 2, 4], 32
        c.scale_warmup, c.scale_its, c.scale_repeats = 1, 3, 2
        c.sn_size, c.sn_its, c.sn_rounds = 32, 4, 3
    return c


def parse_sections(text: str) -> list[str]:
    out = []
    for tok in filter(None, (t.strip().lower() for t in text.split(","))):
        name = SECTIONS[int(tok) - 1] if tok.isdigit() and 1 <= int(tok) <= len(SECTIONS) else tok
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {tok!r}: choose from {', '.join(SECTIONS)} or 1-{len(SECTIONS)}")
        out.append(name)
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small widths and sizes (seconds; used by the tests)")
    mode.add_argument("--full", action="store_true", help="paper batch sizes and the largest patches (long on a CPU)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)} or 1-{len(SECTIONS)}")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="measure torch.compile(G) in section 2 (default: on, off with --quick)")
    args = p.parse_args(argv)
    if args.compile is None:
        args.compile = not args.quick
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    torch.set_num_threads(args.threads)
    sections = parse_sections(args.sections)
    cfg = make_config(args)
    mode = "quick" if args.quick else "full" if args.full else "default"
    print(f"# Training benchmark ({mode})\n")
    print(f"{machine_line(cfg.device)}; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"command: `python benchmarks/bench_training.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    t0 = time.perf_counter()
    for name in sections:
        {"throughput": section_throughput, "precision": section_precision, "data": section_data,
         "scaling": section_scaling, "spectral": section_spectral}[name](cfg)
    print(f"{load_line()}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
