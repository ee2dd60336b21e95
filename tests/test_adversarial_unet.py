"""P4 generative adversarial U-Net: generator, batch renorm, DenseNet critic, pair WGAN-GP trainer, same-class
pairs, conditional mixing, feature distances, and the adversarial_unet_aug_2d bundle (train, inference, evaluate,
DDP, bad input)."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Events
from monai.networks.layers.factories import Norm

from tests.conftest import tiny_case, torchrun_bundle, write_cases, write_pair
from volgan.bundle import run_bundle
from volgan.data import ConditionalMixedPairsPrepareBatch, SameClassPairs, to_pair
from volgan.engines import OutputKeys, PairCriticWganGpTrainer
from volgan.errors import VolganConfigError, VolganDataError
from volgan.losses import GradientPenalty
from volgan.evaluation.metrics import PooledFeatures, conditional_generation_distances, feature_distances, segmentor_features
from volgan.networks import AdversarialUNetGenerator, BatchRenorm, DenseNetCritic

TINY = dict(device="cpu", image_size=[32, 32], gen_channels=[4, 8, 8], noise_channels=2, latent_dim=8,
            convs_per_block=2, critic_features=4, critic_growth=4, critic_blocks=[1, 1, 1, 1], unet_channels=[8, 8, 8],
            gan_batch_size=4, ratio="2-2", gan_iterations=2, max_epochs=1, val_interval=100,
            patience_iterations=100, val_fraction=0.25, log_interval=5, amp=False)


def small_generator(**kw):
    return AdversarialUNetGenerator(2, 2, 2, channels=(4, 8, 8), latent_dim=8, noise_channels=2, convs_per_block=2,
                                    **kw)


@pytest.mark.parametrize("norm", ["batchrenorm", "batch", "instance"])
def test_generator_shapes_2d(norm):
    x = torch.rand(3, 2, 32, 32) * 2 - 1
    g = small_generator(norm=norm)
    y = g(x)
    assert y.shape == (3, 2, 32, 32) and float(y.abs().max()) <= 1
    g.eval()
    z = torch.randn(3, 8)
    assert torch.equal(g(x, z), g(x, z)) and not torch.equal(g(x, z), g(x, torch.randn(3, 8)))  # noise matters
    assert g(torch.rand(2, 2, 48, 16)).shape == (2, 2, 48, 16)  # broadcast noise: any size divisible by 4
    with pytest.raises(ValueError):
        g(torch.rand(2, 2, 30, 32))
    with pytest.raises(ValueError):
        g(x, torch.randn(3, 5))


def test_generator_spatial_noise_and_3d():
    g = small_generator(size=32)
    assert g.noise.out_features == 2 * 8 * 8  # a noise map of the bottleneck's size
    assert g(torch.rand(2, 2, 32, 32)).shape == (2, 2, 32, 32)
    with pytest.raises(ValueError):
        g(torch.rand(2, 2, 64, 64))
    g3 = AdversarialUNetGenerator(3, 2, 2, channels=(4, 8), latent_dim=4, noise_channels=2, convs_per_block=1)
    assert g3(torch.rand(2, 2, 8, 8, 8)).shape == (2, 2, 8, 8, 8)
    assert sum(isinstance(m, BatchRenorm) for m in g3.modules()) > 0
    assert any(isinstance(m, torch.nn.LeakyReLU) and m.negative_slope == 0.01 for m in g3.modules())


def test_batch_renorm_is_batch_norm_with_unit_limits():
    torch.manual_seed(0)
    br, bn = BatchRenorm(3, rmax=1.0, dmax=0.0, momentum=0.1), torch.nn.BatchNorm2d(3, momentum=0.1)
    for _ in range(3):
        x = torch.randn(4, 3, 5, 5) * 3 + 2
        assert torch.allclose(br(x), bn(x), atol=1e-5)
    assert torch.allclose(br.running_mean, bn.running_mean) and torch.allclose(br.running_var, bn.running_var)
    br.eval()
    x = torch.randn(2, 3, 5, 5)
    expected = (x - br.running_mean.view(1, 3, 1, 1)) / (br.running_var.view(1, 3, 1, 1) + br.eps).sqrt()
    assert torch.allclose(br(x), expected, atol=1e-6) and torch.allclose(br(x[:1]), expected[:1], atol=1e-6)
    # relaxed limits: the running statistics enter the training output through r and d
    br3 = BatchRenorm(3, rmax=3.0, dmax=5.0)
    br3.running_mean.fill_(1.0)
    x = torch.randn(4, 3, 5, 5)
    assert not torch.allclose(br3(x), torch.nn.functional.batch_norm(x, None, None, training=True), atol=1e-3)
    sched = BatchRenorm(2, rmax=3.0, dmax=5.0, warmup_steps=2, relax_steps=4)
    seen = []
    for _ in range(8):
        seen.append(sched.limits())
        sched(torch.randn(4, 2, 3, 3, 3))  # 3D input
    assert seen[0] == (1.0, 0.0) and seen[4] == (2.0, 2.5) and seen[-1] == (3.0, 5.0)
    assert isinstance(Norm["batchrenorm", 3](num_features=4), BatchRenorm)


@pytest.mark.parametrize("dims,size", [(2, 32), (3, 16)])
def test_densenet_critic(dims, size):
    d = DenseNetCritic(dims, 4, init_features=8, growth_rate=4, block_config=(2, 2, 2, 2), dropout=0.2)
    x_i, x_2 = torch.randn(3, 2, *(size,) * dims), torch.randn(3, 2, *(size,) * dims)
    d.eval()
    assert d(x_2, x_i).shape == (3, 1) and torch.equal(d(x_2, x_i), d(torch.cat([x_i, x_2], 1)))
    norms = [m for m in d.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 1 for m in norms)  # layer norm
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in d.modules())
    assert sum(isinstance(m, torch.nn.modules.dropout._DropoutNd) for m in d.modules()) == 4  # one per dense block
    assert sum(n.startswith("transition") and "." not in n for n, _ in d.features.named_children()) == 4
    # per-sample: one sample's score does not depend on the others (the gradient penalty stays per sample)
    assert torch.allclose(d(x_2[:1], x_i[:1]), d(x_2, x_i)[:1], atol=1e-5)
    with pytest.raises(ValueError):
        d(torch.randn(1, 2, *(8,) * dims), torch.randn(1, 2, *(8,) * dims))


class Bilinear(torch.nn.Module):
    """D(x, c) = sum(w * x * c): the gradient w.r.t. x is w * c, whatever the interpolation point."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.full((1, 2, 32, 32), 0.05))

    def forward(self, x, cond):
        return (self.w * x * cond).flatten(1).sum(1, keepdim=True)


def pair_batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    lab = lambda: (torch.rand(n, 1, 32, 32, generator=g) > 0.5).long()  # noqa: E731
    return {"image_i": torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, "label_i": lab(),
            "image_j": torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, "label_j": lab()}


def test_pair_gradient_penalty_hand_computed():
    batch, d = pair_batch(), Bilinear()
    x_i, x_j = to_pair(batch["image_i"], batch["label_i"]), to_pair(batch["image_j"], batch["label_j"])
    expected = 10 * ((0.05 * x_i).flatten(1).norm(dim=1) - 1).pow(2).mean()
    gp = GradientPenalty(10)(d, x_j, torch.zeros_like(x_j), cond=x_i)
    assert float(gp) == pytest.approx(float(expected), rel=1e-5)
    # the trainer's penalty interpolates the second element with x_i fixed as the condition
    g = small_generator()
    t = PairCriticWganGpTrainer("cpu", 1, [batch], g, d, torch.optim.Adam(g.parameters(), 1e-4, betas=(0.0, 0.9)),
                                torch.optim.Adam(d.parameters(), 1e-4, betas=(0.0, 0.9)), latent_dim=8)
    t.run()
    out = t.state.output
    assert float(out["gp"]) == pytest.approx(float(expected), rel=1e-5)
    assert torch.equal(out[OutputKeys.COND], x_i) and torch.equal(out[OutputKeys.REAL], x_j)
    assert out[OutputKeys.FAKE].shape == x_j.shape and {OutputKeys.G_LOSS, OutputKeys.D_LOSS} <= set(out)


@pytest.mark.parametrize("n_critic", [1, 3])
def test_n_critic_scheduling(n_critic):
    torch.manual_seed(0)
    g, d = small_generator(), Bilinear()
    og, od = torch.optim.Adam(g.parameters(), 1e-4, betas=(0.0, 0.9)), torch.optim.Adam(d.parameters(), 1e-4)
    steps = {"g": 0, "d": 0}
    for name, opt in (("g", og), ("d", od)):
        opt.register_step_post_hook(lambda *a, name=name: steps.__setitem__(name, steps[name] + 1))
    t = PairCriticWganGpTrainer("cpu", 1, [pair_batch(2, s) for s in range(6)], g, d, og, od, latent_dim=8,
                                n_critic=n_critic)
    has_g = []
    t.add_event_handler(Events.ITERATION_COMPLETED, lambda e: has_g.append(OutputKeys.G_LOSS in e.state.output))
    t.run()
    assert steps == {"d": 6, "g": 6 // n_critic}
    assert has_g == [(i + 1) % n_critic == 0 for i in range(6)]


def test_conditional_mixing_counts_and_binary_masks():
    g = small_generator()
    img = torch.rand(4, 1, 32, 32) * 2 - 1
    lab = torch.zeros(4, 1, 32, 32, dtype=torch.long)
    lab[1:3, :, 8:20, 8:20] = 1  # items 1 and 2 have foreground
    batch = {"image": img, "label": lab}
    for n_real, n_syn in [(4, 0), (2, 2), (0, 5), (3, 6)]:
        m = ConditionalMixedPairsPrepareBatch(g, n_real, n_syn, latent_dim=8, seed=1)
        x, y = m(batch, torch.device("cpu"))
        assert x.shape == (n_real + n_syn, 1, 32, 32) and y.shape == (n_real + n_syn, 1, 32, 32)
        assert torch.equal(x[:n_real], img[:n_real]) and torch.equal(y[:n_real], lab[:n_real])
        assert set(torch.unique(y).tolist()) <= {0, 1} and y.dtype == torch.long
        if n_syn:
            src = m.sources(batch)
            assert src.shape == (n_syn, 2, 32, 32)
            assert all(torch.equal(src[k, :1], img[1 + k % 2]) for k in range(n_syn))  # foreground slices, cycled
    assert g.training  # the generator's mode is restored
    a = ConditionalMixedPairsPrepareBatch(g, 2, 2, latent_dim=8, seed=3)(batch)[0]
    assert torch.equal(a, ConditionalMixedPairsPrepareBatch(g, 2, 2, latent_dim=8, seed=3)(batch)[0])
    with pytest.raises(ValueError):
        ConditionalMixedPairsPrepareBatch(g, 6, 2, latent_dim=8)(batch)


def slice_items():
    items = []
    for case in range(3):
        for s in range(4):
            lab = torch.zeros(1, 8, 8, dtype=torch.long)
            if s != 0 and not (case == 2 and s > 1):
                lab[0, 2:5, 2:5] = 1 + s % 2
            items.append({"image": torch.full((1, 8, 8), case * 10.0 + s), "label": lab, "case": case, "slice": s})
    return items  # case 0 and 1: 3 foreground slices each; case 2: one; every case has an empty slice


def test_same_class_pairs():
    items = slice_items()
    pairs = SameClassPairs(items, "case", seed=0)
    assert len(pairs) == 7  # the empty slices are never partners
    for _ in range(5):
        for k in range(len(pairs)):
            p = pairs[k]
            assert not torch.equal(p["image_i"], p["image_j"])  # never itself
            assert bool(p["label_i"].any()) and bool(p["label_j"].any())
            if p["case_i"] != 2:
                assert p["case_i"] == p["case_j"]  # same case
    lone = [pairs[k]["case_j"] for k in range(len(pairs)) if pairs[k]["case_i"] == 2]
    assert lone and all(c != 2 for c in lone)  # the only foreground slice of its case: partner from all slices
    assert len({(pairs[0]["case_j"], float(pairs[0]["image_j"][0, 0, 0])) for _ in range(20)}) > 1  # random
    a, b = SameClassPairs(items, seed=5), SameClassPairs(items, seed=5)
    assert all(torch.equal(a[k]["image_j"], b[k]["image_j"]) for k in range(7))  # seeded
    only_one = SameClassPairs(items, "all", foreground=[2])  # slices with label value 2 only: s = 1, 3 and case 2
    assert len(only_one) == 5
    assert len({only_one[0]["case_j"] for _ in range(30)}) > 1  # "all" pairs across cases
    with pytest.raises(VolganDataError):
        SameClassPairs(items[:2])
    with pytest.raises(VolganConfigError):
        SameClassPairs(items, "label")
    with pytest.raises(VolganDataError):
        SameClassPairs([dict(items[1], label=torch.ones(1, 4, 4, dtype=torch.long)), items[2]])


def test_feature_distances():
    import monai

    torch.manual_seed(0)
    net = monai.networks.nets.UNet(2, 1, 2, channels=[8, 8, 8], strides=[2, 2], num_res_units=0, norm=None)
    extractor = segmentor_features(net)
    assert isinstance(extractor, PooledFeatures)
    real = torch.rand(24, 1, 32, 32) * 2 - 1
    same = feature_distances(real, real.clone(), extractor, batch_size=5)
    shifted = feature_distances(real, (real + 0.8).clamp(-1, 1), extractor)
    assert same["n_real"] == same["n_fake"] == 24 and same["n_features"] == 8
    assert abs(same["fid"]) < 1e-6 and abs(same["mmd"]) < 0.05 * shifted["mmd"]
    assert shifted["fid"] > 0 and shifted["mmd"] > 0
    flat = feature_distances(list(real[:10]), real[:6] + 1, lambda x: x.flatten(1)[:, :4])  # any extractor
    assert flat["fid"] > 0 and flat["n_fake"] == 6
    with pytest.raises(ValueError):
        feature_distances(real[:1], real, extractor)


@pytest.fixture
def volumes(tmp_path):
    return write_cases(tmp_path / "vols", 4)


def test_bundle_train_inference_evaluate(volumes, tmp_path):
    out = tmp_path / "run"
    wf = run_bundle("adversarial_unet_aug_2d", "train", dataset_dir=str(volumes), output_dir=str(out), **TINY)
    assert (out / "model.pt").is_file() and (out / "model_g.pt").is_file() and (out / "gan").is_dir()
    assert wf.parser.get_parsed_content("gan#trainer").state.iteration == 2
    assert (wf.parser.get_parsed_content("n_real"), wf.parser.get_parsed_content("n_synthetic")) == (2, 2)
    # inference: one volume, segmented slice by slice and stacked back at its own size
    run_bundle("adversarial_unet_aug_2d", "inference", input=str(volumes / "c3_image.nii.gz"), device="cpu",
               ckpt_path=str(out / "model.pt"), output_dir=str(tmp_path / "seg"), **{
                   k: TINY[k] for k in ("image_size", "unet_channels")})
    seg = nib.load(str(tmp_path / "seg" / "c3_image_seg.nii.gz"))
    assert seg.shape == (24, 24, 4) and set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1}
    # evaluation: the downstream Dice / HD95, and FID / MMD of generated vs real slices
    ev = tmp_path / "eval"
    run_bundle("adversarial_unet_aug_2d", "evaluate", dataset_dir=str(volumes), output_dir=str(out), eval_dir=str(ev),
               **TINY)
    held = json.loads((ev / "results.json").read_text(encoding="utf-8"))["results"]["held-out volumes"]
    assert held["n_test"] == 4 and {"Dice", "HD95 (voxels)"} <= set(held["summary"])
    gen = json.loads((ev / "generation.json").read_text(encoding="utf-8"))
    assert np.isfinite(gen["fid"]) and np.isfinite(gen["mmd"]) and gen["n_real"] == gen["n_fake"] > 2
    assert gen["n_features"] == 8 and "bottom" in gen["features"]
    with pytest.raises(VolganConfigError, match="trained as .* but the network built here has"):  # a generator built with other widths
        conditional_generation_distances([], small_generator(), lambda x: x.flatten(1), str(out / "model_g.pt"))
    # the baselines of the same bundle: real slices only, no GAN, so no generation distances; with the standard
    # augmentation (#20), every read of a real slice is a new random deformation of it, labels stay labels
    base = tmp_path / "base"
    wf = run_bundle("adversarial_unet_aug_2d", "train", dataset_dir=str(volumes), output_dir=str(base),
                    **{**TINY, "augment_with_gan": False, "augment": True})
    assert (base / "model.pt").is_file() and not (base / "model_g.pt").exists()
    assert (wf.parser.get_parsed_content("n_real"), wf.parser.get_parsed_content("n_synthetic")) == (4, 0)
    ds, raw = wf.parser.get_parsed_content("train#dataset"), wf.parser.get_parsed_content("slices").train
    first, second = ds[0], ds[0]
    assert not torch.equal(torch.as_tensor(first["image"]), torch.as_tensor(second["image"]))
    assert not torch.equal(torch.as_tensor(first["image"]), torch.as_tensor(raw[0]["image"]))
    assert set(torch.unique(torch.as_tensor(first["label"])).tolist()) <= {0, 1}


def test_bundle_bad_input(tmp_path):
    d = write_cases(tmp_path / "bad", 1, seed=1)
    img, lab = tiny_case(np.random.RandomState(2), (24, 24, 4))
    write_pair(d, "c1", img, lab[:20])  # image/label shape mismatch
    with pytest.raises(VolganDataError, match="c1_"):
        run_bundle("adversarial_unet_aug_2d", "train", dataset_dir=str(d), output_dir=str(tmp_path / "o"), **TINY)


def test_torchrun_two_cpu_processes(volumes, tmp_path):
    out = tmp_path / "ddp"
    tiny = {k: v for k, v in TINY.items() if k not in ("device", "amp")}
    torchrun_bundle("adversarial_unet_aug_2d", 29531, dataset_dir=volumes, output_dir=out,
                    **{**tiny, "gan_iterations": 1, "gan_batch_size": 2, "ratio": "1-1", "val_interval": 2})
    assert (out / "model.pt").is_file() and (out / "model_g.pt").is_file()
