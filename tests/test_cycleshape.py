"""P2 cycle/shape GAN: networks, losses, update order, bundle modes, translation geometry, unpaired-data errors."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import tiny_case, torchrun_bundle
from volgan.bundle import run_bundle
from volgan.data import check_unpaired, load_datalist
from volgan.engines import CycleShapeEvents, CycleShapeTrainer
from volgan.errors import VolganConfigError, VolganDataError
from volgan.losses import CycleConsistencyLoss, ShapeConsistencyLoss
from volgan.networks import PatchDiscriminator, conv_modules, cycle_generator, make_segmentor

CT_LUT = {3: 5, 2: 1, 4: 2, 1: 3}  # tiny_case labels -> TotalSegmentator-like ids (liver 5, spleen 1, ...)


def _domain(root: Path, name: str, n: int, scale, shape=(24, 24, 16), seed=0, lut=CT_LUT, dims=3):
    rng = np.random.RandomState(seed)
    d = root / name
    d.mkdir(parents=True)
    items = []
    for i in range(n):
        img, lab = tiny_case(rng, shape)
        mapped = np.zeros_like(lab)
        for k, v in lut.items():
            mapped[lab == k] = v
        if dims == 2:
            img, mapped = img[..., shape[2] // 2], mapped[..., shape[2] // 2]
        aff = np.diag([3.0, 2.5, 4.0, 1.0])
        aff[:3, 3] = [10, -5, 3]
        ip, lp = d / f"c{i}_image.nii.gz", d / f"c{i}_label.nii.gz"
        nib.save(nib.Nifti1Image(scale(img).astype(np.float32), aff), str(ip))
        nib.save(nib.Nifti1Image(mapped.astype(np.uint8), aff), str(lp))
        items.append({"image": str(ip), "label": str(lp)})
    (root / f"{name}.json").write_text(json.dumps({"training": items}), encoding="utf-8")
    return root / f"{name}.json"


@pytest.fixture
def domains(tmp_path):
    return _domain(tmp_path, "ct", 3, lambda x: 2 * x - 1000, seed=0), _domain(tmp_path, "mr", 2, lambda x: x, seed=1)


#: the test domains' ids (CT_LUT) -> the shared space: P2's label maps have no default (#21)
SHARED = {1: 1, 2: 2, 3: 3, 5: 4}
TINY = dict(device="cpu", patch_size=[16, 16, 16], gen_channels=[8, 16, 32, 32], disc_channels=[8, 16, 16, 16],
            disc_strides=[2, 2, 1, 1], seg_channels=[8, 16, 32, 64], log_interval=1, image_interval=1, amp=False,
            pool_size=2, label_map_a=SHARED, label_map_b=SHARED)


@pytest.mark.parametrize("dims,shape", [(3, (16, 24, 16)), (2, (32, 24))])
def test_network_shapes(dims, shape):
    x = torch.randn(2, 1, *shape)
    g = cycle_generator(dims, 1, 1, (8, 16, 32, 32))
    assert g(x).shape == x.shape and float(g(x).abs().max()) <= 1
    assert not any(isinstance(c, torch.nn.modules.conv._ConvTransposeNd) for c in conv_modules(g))
    assert [c.stride[0] for c in conv_modules(g.down_blocks)] == [2, 1] * 3  # stride-2 conv then a conv, 3 levels
    d = PatchDiscriminator(dims, 1, 0, (8, 16, 32, 64), (2, 2, 2, 1), norm="instance", spectral=False)
    assert d(torch.randn(2, 1, *(32,) * dims)).shape[:2] == (2, 1)
    for kind in ("unet", "refinenet", "pspnet"):
        s = make_segmentor(kind, dims, 1, 5, (8, 16, 32, 64))
        assert s(x).shape == (2, 5, *shape)


def test_cycle_loss_zero_for_identity_and_weighted():
    x = torch.randn(1, 1, 8, 8, 8)
    ident = torch.nn.Identity()
    assert float(CycleConsistencyLoss()((ident(ident(x)), x), (ident(ident(x)), x))) == 0.0
    assert float(CycleConsistencyLoss(10)((x + 1, x))) == pytest.approx(10.0)


def test_shape_loss_flows_into_g_not_frozen_s():
    g = cycle_generator(3, 1, 1, (4, 8, 8, 8))
    s = make_segmentor("unet", 3, 1, 3, (4, 8, 16))
    for p in s.parameters():
        p.requires_grad_(False)
    x, y = torch.randn(1, 1, 16, 16, 16), torch.randint(0, 3, (1, 1, 16, 16, 16))
    loss = ShapeConsistencyLoss(1.0)((s(g(x)), y))
    loss.backward()
    assert all(p.grad is None for p in s.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())
    assert float(ShapeConsistencyLoss(1.0)((torch.tensor([[[9.0], [-9.0]]]), torch.tensor([[0]])))) < 1e-3


def _trainer(mode="ours", **kw):
    torch.manual_seed(0)
    nets = dict(g_a=cycle_generator(3, 1, 1, (4, 8, 8, 8)), g_b=cycle_generator(3, 1, 1, (4, 8, 8, 8)),
                d_a=PatchDiscriminator(3, 1, 0, (4, 8), (2, 2), norm="instance", spectral=False),
                d_b=PatchDiscriminator(3, 1, 0, (4, 8), (2, 2), norm="instance", spectral=False),
                s_a=make_segmentor("unet", 3, 1, 3, (4, 8, 16)), s_b=make_segmentor("unet", 3, 1, 3, (4, 8, 16)))
    opt = lambda *ms: torch.optim.Adam([p for m in ms for p in m.parameters()], lr=1e-3)  # noqa: E731
    gen = torch.Generator().manual_seed(0)
    data = [{"a_image": torch.rand(1, 1, 16, 16, 16, generator=gen) * 2 - 1,
             "a_label": torch.randint(0, 3, (1, 1, 16, 16, 16), generator=gen),
             "b_image": torch.rand(1, 1, 16, 16, 16, generator=gen) * 2 - 1,
             "b_label": torch.randint(0, 3, (1, 1, 16, 16, 16), generator=gen)}]
    t = CycleShapeTrainer("cpu", 1, data, **nets, g_optimizer=opt(nets["g_a"], nets["g_b"]),
                          d_optimizer=opt(nets["d_a"], nets["d_b"]), s_optimizer=opt(nets["s_a"], nets["s_b"]),
                          mode=mode, pool_size=2, **kw)
    return t, nets


def _snap(nets):
    return {k: torch.cat([p.detach().flatten().clone() for p in m.parameters()]) for k, m in nets.items()}


def test_joint_iteration_update_order():
    t, nets = _trainer("ours")
    changed = []
    last = [_snap(nets)]

    def record(step):
        def fn(engine):
            now = _snap(nets)
            changed.append((step, sorted(k for k in now if not torch.equal(now[k], last[0][k]))))
            last[0] = now
        return fn

    for ev, name in ((CycleShapeEvents.G_STEP_COMPLETED, "G"), (CycleShapeEvents.S_STEP_COMPLETED, "S"),
                     (CycleShapeEvents.D_STEP_COMPLETED, "D")):
        t.add_event_handler(ev, record(name))
    t.run()
    assert changed == [("G", ["g_a", "g_b"]), ("S", ["s_a", "s_b"]), ("D", ["d_a", "d_b"])]
    out = t.state.output
    assert out["phase"] == "joint" and float(out["shape"]) > 0 and float(out["cycle"]) > 0


@pytest.mark.parametrize("mode,phases", [("cyclegan", ["s", "gd", "gd"]), ("ours", ["s", "gd", "joint"]),
                                          ("ada", ["s", "gd", "ada"])])
def test_phases(mode, phases):
    t, _ = _trainer(mode, pretrain_s_epochs=1, pretrain_gd_epochs=1)
    assert [t.phase(e) for e in (1, 2, 3)] == phases


@pytest.mark.parametrize("mode", ["ours", "ada", "cyclegan"])
def test_bundle_modes_train_and_translate(mode, domains, tmp_path):
    a, b = domains
    out = tmp_path / mode
    run_bundle("cycleshape_ct_mri_3d", "train", domain_a=str(a), domain_b=str(b), output_dir=str(out), mode=mode,
               max_epochs=3, pretrain_s_epochs=1, pretrain_gd_epochs=1, **TINY)
    ck = torch.load(out / "checkpoint_3.pt", weights_only=True)
    assert ck["trainer"]["iteration"] == 9  # 3 epochs over the larger domain (3 cases)
    for f in ("model.pt", "model_g_a.pt", "model_s_a.pt", "model_s_b.pt"):
        assert (out / f).is_file()
    if mode != "ours":
        return
    synth = tmp_path / "synth"
    run_bundle("cycleshape_ct_mri_3d", "inference", direction="a2b", input=str(a), ckpt_path=str(out / "model.pt"),
               output_dir=str(synth), device="cpu", gen_channels=TINY["gen_channels"], roi_size=[16, 16, 16])
    dl = load_datalist(synth / "datalist.json")
    src = load_datalist(a)
    assert len(dl) == 3
    for e, s in zip(dl, src):
        ref, img, lab = nib.load(s["image"]), nib.load(e["image"]), nib.load(e["label"])
        assert img.shape == ref.shape == lab.shape
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1, 2, 3, 4}  # source labels in the shared space
    ev = tmp_path / "eval"
    run_bundle("cycleshape_ct_mri_3d", "evaluate", test_a=str(a), test_b=str(b), output_dir=str(out),
               eval_dir=str(ev), **{**TINY, "roi_size": [16, 16, 16]})
    res = json.loads((ev / "results.json").read_text(encoding="utf-8"))["results"]
    assert set(res) == {"S-score A->B", "S-score B->A", "Dice S_A (real A)", "Dice S_B (real B)"}


def test_unpaired_data_errors(tmp_path, domains):
    a, b = domains
    ia, ib = load_datalist(a), load_datalist(b)
    m = {1: 1, 2: 2, 3: 3, 5: 4}
    check_unpaired(ia, ib, m, m)
    with pytest.raises(VolganDataError, match="domain B has none of the shared classes"):
        check_unpaired(ia, ib, m, {40: 1})
    two_d = _domain(tmp_path, "mr2d", 1, lambda x: x, shape=(24, 24, 16), dims=2)
    with pytest.raises(VolganDataError, match="expected 3 spatial dims"):
        check_unpaired(ia, load_datalist(two_d), m, m)
    # no default mapping (#21): unrelated ids of two datasets are never merged silently; one line names the option
    with pytest.raises(VolganConfigError, match="--label_map_b is not set"):
        check_unpaired(ia, ib, m, None)
    no_maps = {k: v for k, v in TINY.items() if not k.startswith("label_map")}
    with pytest.raises(VolganConfigError, match="--label_map_a is not set: give the mapping"):
        run_bundle("cycleshape_ct_mri_3d", "train", domain_a=str(a), domain_b=str(b), output_dir=str(tmp_path / "y"),
                   max_epochs=1, **no_maps)
    assert not (tmp_path / "y" / "checkpoint_1.pt").exists()
    nolabel = tmp_path / "nolabel.json"
    nolabel.write_text(json.dumps({"training": [{"image": ib[0]["image"]}]}), encoding="utf-8")
    with pytest.raises(VolganDataError, match="has no 'label'"):
        run_bundle("cycleshape_ct_mri_3d", "train", domain_a=str(a), domain_b=str(nolabel),
                   output_dir=str(tmp_path / "x"), max_epochs=1, **TINY)


def test_torchrun_two_cpu_processes(domains, tmp_path):
    a, b = domains
    out = tmp_path / "ddp"
    tiny = {k: v for k, v in TINY.items() if k not in ("device", "amp")}
    torchrun_bundle("cycleshape_ct_mri_3d", 29519, domain_a=a, domain_b=b, output_dir=out, max_epochs=3,
                    pretrain_s_epochs=1, pretrain_gd_epochs=1, **tiny)
    ck = torch.load(out / "checkpoint_3.pt", weights_only=True)
    assert ck["trainer"]["iteration"] == 6  # 3 cases over 2 ranks (padded to 4): 2 iterations per epoch
    assert (out / "model_s_b.pt").is_file()


def test_bundle_2d_slices(tmp_path):
    """P2's mammography setting: the same bundle with spatial_dims 2 on 2D images."""
    a = _domain(tmp_path, "ct2d", 3, lambda x: 2 * x - 1000, shape=(32, 32, 8), dims=2)
    b = _domain(tmp_path, "mr2d", 2, lambda x: x, shape=(32, 32, 8), seed=1, dims=2)
    out = tmp_path / "out2d"
    run_bundle("cycleshape_ct_mri_3d", "train", domain_a=str(a), domain_b=str(b), output_dir=str(out),
               spatial_dims=2, max_epochs=3, pretrain_s_epochs=1, pretrain_gd_epochs=1,
               **{**TINY, "patch_size": [32, 32]})
    synth = tmp_path / "synth2d"
    run_bundle("cycleshape_ct_mri_3d", "inference", direction="b2a", input=str(b), ckpt_path=str(out / "model_g_a.pt"),
               output_dir=str(synth), device="cpu", spatial_dims=2, gen_channels=TINY["gen_channels"],
               roi_size=[32, 32])
    dl = load_datalist(synth / "datalist.json")
    assert len(dl) == 2 and nib.load(dl[0]["image"]).shape == (32, 32)


def test_validation_keeps_the_best_g_b_by_translated_dice(domains, tmp_path):
    """val_domain_a: every epoch, held-out A volumes are translated by G_B and segmented by S_B (per window);
    model_best.pt is the G_B of the best epoch: re-scored here, it gives the best recorded Dice."""
    from ignite.engine import Events
    from monai.bundle import ConfigParser

    from tests.conftest import BUNDLES
    from volgan.io import safe_torch_load

    a, b = domains
    out = tmp_path / "run"
    parser = ConfigParser()
    parser.read_config(str(BUNDLES / "cycleshape_ct_mri_3d" / "configs" / "train.yaml"))
    parser.update(dict(bundle_root=str(BUNDLES / "cycleshape_ct_mri_3d"), domain_a=str(a), domain_b=str(b),
                       val_domain_a=str(a), output_dir=str(out), max_epochs=4, pretrain_s_epochs=1,
                       pretrain_gd_epochs=1, n_saved=2, **TINY))
    evaluator = parser.get_parsed_content("validate#evaluator")
    scores: list[float] = []
    evaluator.add_event_handler(Events.COMPLETED, lambda e: scores.append(float(e.state.metrics["val_dice"])))
    for expr in ("initialize", "run"):
        parser.get_parsed_content(expr)
    assert len(scores) == 4 and all(0 <= s <= 1 for s in scores), scores
    # whole volumes (24x24x16 > the 16^3 patch): the evaluator saw full-size predictions
    assert evaluator.state.output[0]["pred"].shape[1:] == (24, 24, 16)
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_3.pt", "checkpoint_4.pt"]
    g_b = parser.get_parsed_content("network")
    g_b.load_state_dict(safe_torch_load(out / "model_best.pt", "cpu"))
    evaluator.run()  # S_B is the final one: the best G_B re-scored with it
    assert 0 <= scores[-1] <= 1
    ours = safe_torch_load(out / "model.pt", "cpu")
    best_epoch = int(np.argmax(scores[:4])) + 1
    assert (best_epoch == 4) == all(torch.equal(ours[k], g_b.state_dict()[k]) for k in ours)


@torch.no_grad()
@pytest.mark.parametrize("bundle,key,kwargs", [("cycleshape_ct_mri_3d", "discriminator_def", {}),
                                               ("mmgan_label2mri_3d", "discriminator_def", None)])
def test_default_discriminators_take_the_default_patch(bundle, key, kwargs):
    """#21, defaults that run: the P2 PatchGAN with its default strides failed on its own default 64x64x16 patch
    ('Kernel size can't be greater than actual input size' in the first G/D step); every 3D bundle's default D now
    scores its default patch."""
    from monai.bundle import ConfigParser
    from tests.conftest import BUNDLES

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / bundle / "configs" / "train.yaml"))
    parser["device"] = "cpu"
    d = parser.get_parsed_content(key)
    d = d(**kwargs) if kwargs is not None else d
    patch = parser.get_parsed_content("patch_size")
    cond = getattr(d, "cond_channels", 0)
    x = torch.zeros(1, 1, *patch)
    out = d(x, torch.zeros(1, cond, *patch)) if cond else d(x)
    assert out.ndim == 5 and min(out.shape[2:]) >= 1
