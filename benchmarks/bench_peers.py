"""volgan's trainers against what a user would otherwise write (issue #23, item 2), in the same run:

    python benchmarks/bench_peers.py            # CPU: P5 64^2 batch 16, cycle/shape 32^3 (about 2-3 minutes)
    python benchmarks/bench_peers.py --quick    # toy widths and sizes (smoke test, seconds)
    python benchmarks/bench_peers.py --device cuda --repeats 5

1. P5's WGAN-GP pair trainer (``volgan.engines.WganGpTrainer``, what ``bundles/wgan_pairs_seg_2d`` builds) vs
   MONAI's own ``monai.engines.GanTrainer`` driving the same networks (``PairGenerator``, ``DCGANCritic``), optimisers
   and WGAN-GP losses, written as a MONAI user first writes it: a ``d_prepare_batch`` that stacks image and mask, a
   ``d_loss_function(fake, real)`` with the Wasserstein loss and the gradient penalty, a ``g_loss_function(fake)``;
   GanTrainer's defaults otherwise (latents from ``default_make_latent``, two ``.item()`` per iteration, decollate).
2. The cycle/shape joint step (``volgan.engines.CycleShapeTrainer``, P2) vs a bare loop structured the way
   pytorch-CycleGAN-and-pix2pix structures its iteration (``CycleGANModel``: ``set_input`` / ``forward`` /
   ``backward_G`` / ``backward_D_A`` / ``backward_D_B`` / ``optimize_parameters``), with P2's segmentors added as the
   paper's extra step (``backward_S``); same networks, losses, image pools and update order.

Each comparison is repeated ``--repeats`` times, the two tools interleaved (a change of load hits both alike);
the table gives the median of the per-repeat ratios peer / volgan and their min..max (the run-to-run spread).
A ratio > 1 means volgan's step is faster.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from types import SimpleNamespace

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # noqa: E402
    DeviceClock,
    load_line,
    machine_line,
    md_table,
    median,
    short_error,
    trainer_seconds_per_it,
)
from bench_training import METHODS  # noqa: E402

# --------------------------------------------------------------------------------------------------- 1. WGAN-GP


class PairSlices(torch.utils.data.Dataset):
    """``n`` random (image in [-1, 1], binary mask) 2D pairs of ``size``^2, one channel each."""

    def __init__(self, n: int, size: int, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        self.images = torch.rand(n, 1, size, size, generator=gen) * 2 - 1
        self.labels = torch.randint(0, 2, (n, 1, size, size), generator=gen)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i]}


def monai_gan_trainer(st, loader, device, latent: int):
    """MONAI's ``GanTrainer`` with P5's WGAN-GP losses, as a MONAI user writes it first."""
    from monai.engines import GanTrainer

    from volgan.data import to_pair

    def d_prepare_batch(batchdata, device, non_blocking=False, **kwargs):
        return to_pair(batchdata["image"], batchdata["label"]).to(device, non_blocking=non_blocking)

    def d_loss(fake, real):
        fake = fake.detach()
        return st.w(st.d(fake), False) + st.w(st.d(real), True) + st.gp(st.d, real, fake)

    def g_loss(fake):
        return st.w(st.d(fake), True)

    return GanTrainer(device, 1, loader, g_network=st.g, g_optimizer=st.og, g_loss_function=g_loss, d_network=st.d,
                      d_optimizer=st.od, d_loss_function=d_loss, latent_shape=latent, d_prepare_batch=d_prepare_batch,
                      d_train_steps=1)


def compare_wgan(cfg) -> dict:
    method = METHODS["wgan_p5"](cfg.quick, cfg.device)
    size, batch = cfg.wgan_size, cfg.wgan_batch
    loader = torch.utils.data.DataLoader(PairSlices(batch * (cfg.warmup + cfg.its), size), batch_size=batch,
                                         shuffle=False, drop_last=True)
    st = method.build(size)
    volgan_s, peer_s = [], []
    for _ in range(cfg.repeats):
        volgan_s.append(trainer_seconds_per_it(method.trainer(st, loader), cfg.warmup, cfg.device))
        peer_s.append(trainer_seconds_per_it(monai_gan_trainer(st, loader, cfg.device, method.latent), cfg.warmup,
                                             cfg.device))
    return {"comparison": "P5 WGAN-GP: volgan `WganGpTrainer` vs MONAI `GanTrainer`", "patch": f"{size}^2",
            "batch": batch, "volgan": volgan_s, "peer": peer_s}


# --------------------------------------------------------------------------------------------------- 2. cycle/shape


class CycleShapeModel:
    """P2's joint step structured as pytorch-CycleGAN-and-pix2pix's ``CycleGANModel`` (``set_input``, ``forward``,
    ``backward_G``, ``backward_D_A/B``, ``optimize_parameters``), with the segmentors' step (``backward_S``) added.
    Names follow volgan's: ``g_b`` maps A -> B and ``d_b`` judges B images."""

    def __init__(self, st, device: torch.device):
        self.st, self.device = st, device

    def set_input(self, batch: dict) -> None:
        self.real_a, self.label_a = batch["a_image"].to(self.device), batch["a_label"].to(self.device)
        self.real_b, self.label_b = batch["b_image"].to(self.device), batch["b_label"].to(self.device)

    def forward(self) -> None:
        st = self.st
        self.fake_b = st.g_b(self.real_a)
        self.rec_a = st.g_a(self.fake_b)
        self.fake_a = st.g_a(self.real_b)
        self.rec_b = st.g_b(self.fake_a)

    def backward_d_basic(self, net_d, real, fake) -> torch.Tensor:
        loss = (self.st.adv(net_d(real), True, True) + self.st.adv(net_d(fake.detach()), False, True)) * 0.5
        loss.backward()
        return loss

    def backward_d_a(self) -> None:
        fake_a, _ = self.st.pool_a.query(self.fake_a.detach())
        self.loss_d_a = self.backward_d_basic(self.st.d_a, self.real_a, fake_a)

    def backward_d_b(self) -> None:
        fake_b, _ = self.st.pool_b.query(self.fake_b.detach())
        self.loss_d_b = self.backward_d_basic(self.st.d_b, self.real_b, fake_b)

    def backward_g(self) -> None:
        st = self.st
        adv = st.adv(st.d_b(self.fake_b), True, False) + st.adv(st.d_a(self.fake_a), True, False)
        cycle = st.cycle((self.rec_a, self.real_a), (self.rec_b, self.real_b))
        shape = st.shape((st.s_b(self.fake_b), self.label_a), (st.s_a(self.fake_a), self.label_b))
        self.loss_g = adv + cycle + shape
        self.loss_g.backward()

    def backward_s(self) -> None:
        """P2: each segmentor on half real, half translated images of its domain."""
        import torch.nn.functional as F

        st = self.st
        mix = METHODS["cycleshape"]._mix
        xa, ya = mix(self.real_a, self.label_a, self.fake_a.detach(), self.label_b)
        xb, yb = mix(self.real_b, self.label_b, self.fake_b.detach(), self.label_a)
        self.loss_s = F.cross_entropy(st.s_a(xa), ya[:, 0]) + F.cross_entropy(st.s_b(xb), yb[:, 0])
        self.loss_s.backward()

    @staticmethod
    def set_requires_grad(nets, flag: bool) -> None:
        for net in nets:
            for p in net.parameters():
                p.requires_grad = flag

    def optimize_parameters(self) -> None:
        st = self.st
        self.forward()
        self.set_requires_grad([st.d_a, st.d_b, st.s_a, st.s_b], False)
        st.og.zero_grad()
        self.backward_g()
        st.og.step()
        self.set_requires_grad([st.s_a, st.s_b], True)
        self.set_requires_grad([st.g_a, st.g_b], False)
        st.os.zero_grad()
        self.backward_s()
        st.os.step()
        self.set_requires_grad([st.d_a, st.d_b], True)
        st.od.zero_grad()
        self.backward_d_a()
        self.backward_d_b()
        st.od.step()
        self.set_requires_grad([st.g_a, st.g_b], True)


def cyclegan_loop_seconds_per_it(model: CycleShapeModel, batches: list, warmup: int, device) -> float:
    """pytorch-CycleGAN-and-pix2pix's train.py inner loop (``set_input``, ``optimize_parameters``) over
    ``batches``; mean seconds per iteration after ``warmup``."""
    clock = DeviceClock(device)
    for i, data in enumerate(batches):
        model.set_input(data)
        model.optimize_parameters()
        if i + 1 == warmup:
            clock.mark()
    clock.mark()
    return clock.seconds()[0] / (len(batches) - warmup)


def compare_cycleshape(cfg) -> dict:
    method = METHODS["cycleshape"](cfg.quick, cfg.device)
    size = cfg.cycle_size
    batches = method.batches(size, 1, cfg.warmup + cfg.its)
    st = method.build(size)
    model = CycleShapeModel(st, cfg.device)
    volgan_s, peer_s = [], []
    for _ in range(cfg.repeats):
        volgan_s.append(trainer_seconds_per_it(method.trainer(st, batches), cfg.warmup, cfg.device))
        peer_s.append(cyclegan_loop_seconds_per_it(model, batches, cfg.warmup, cfg.device))
    return {"comparison": "P2 cycle/shape joint step: volgan `CycleShapeTrainer` vs a pytorch-CycleGAN-style loop",
            "patch": f"{size}^3", "batch": 1, "volgan": volgan_s, "peer": peer_s}


# --------------------------------------------------------------------------------------------------- main


def summarise(res: dict) -> dict:
    ratios = [p / v for v, p in zip(res["volgan"], res["peer"])]
    return {**res, "ratios": ratios, "ratio": median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "volgan_ms": median(res["volgan"]) * 1000, "peer_ms": median(res["peer"]) * 1000}


def peers_table(results: list[dict]) -> str:
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["comparison"], "", "", f"failed: {r['error']}", "", "", "", ""])
            continue
        rows.append([r["comparison"], r["patch"], r["batch"], f"{r['volgan_ms']:,.1f}", f"{r['peer_ms']:,.1f}",
                     f"{r['ratio']:.2f}", f"{r['ratio_min']:.2f} .. {r['ratio_max']:.2f}", len(r["ratios"])])
    return md_table(["comparison", "patch", "batch", "volgan ms/it", "peer ms/it", "peer / volgan (median)",
                     "min .. max", "repeats"], rows, "llrrrrrr")


def make_config(args) -> SimpleNamespace:
    dev = torch.device(args.device)
    c = SimpleNamespace(device=dev, quick=args.quick)
    if args.quick:
        c.wgan_size, c.wgan_batch, c.cycle_size, c.warmup, c.its, c.repeats = 32, 2, 16, 1, 1, 2
    elif dev.type == "cuda":
        c.wgan_size, c.wgan_batch, c.cycle_size, c.warmup, c.its, c.repeats = 128, 16, 64, 3, 20, 5
    else:
        c.wgan_size, c.wgan_batch, c.cycle_size, c.warmup, c.its, c.repeats = 64, 16, 32, 1, 3, 3
    c.repeats = args.repeats or c.repeats
    return c


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="toy widths and sizes (seconds; used by the tests)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, help="repeats of each comparison (default 3 on a CPU, 2 with --quick)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = make_config(args)
    print(f"# volgan vs peers ({'quick' if args.quick else 'default'})\n")
    print(f"{machine_line(cfg.device)}; {time.strftime('%Y-%m-%d %H:%M')}; "
          f"command: `python benchmarks/bench_peers.py {' '.join(sys.argv[1:] if argv is None else argv)}`\n")
    print(load_line() + "\n")
    t0 = time.perf_counter()
    results = []
    for compare in (compare_wgan, compare_cycleshape):
        try:
            results.append(summarise(compare(cfg)))
        except Exception as exc:  # noqa: BLE001 - a table cell
            results.append({"comparison": compare.__name__, "error": short_error(exc)})
        print(f"<!-- {compare.__name__} done -->", flush=True)
    print(peers_table(results))
    print(f"\nms/it: median over the repeats of each run's mean over {cfg.its} iterations after {cfg.warmup} warm-up "
          f"(networks at the bundles' widths{', toy widths: --quick' if cfg.quick else ''}); ratio per repeat = "
          "peer / volgan, the two interleaved; > 1: volgan is faster.\n")
    print(f"{load_line()}; total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
