"""The model zoo's own checks (issue #22, ``ci/verify_bundle.py`` of Project-MONAI/model-zoo, which cannot be
fetched here): the required files of every bundle, and ``monai.bundle.verify_net_in_out`` with the shapes its
metadata declares (the network built from inference.yaml's ``network_def``, random weights)."""

from __future__ import annotations

import json

import pytest
from monai.bundle import verify_net_in_out

from tests.conftest import BUNDLES

NAMES = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


@pytest.mark.parametrize("bundle", NAMES)
def test_required_files(bundle):
    b = BUNDLES / bundle
    for f in ("LICENSE", "configs/metadata.json", "configs/inference.yaml", "configs/train.yaml", "docs/README.md",
              "docs/data_license.txt"):
        assert (b / f).is_file(), f
    assert (b / "LICENSE").read_text(encoding="utf-8").startswith("Apache License")


@pytest.mark.parametrize("bundle", NAMES)
def test_verify_net_in_out_with_the_metadata_shapes(bundle):
    b = BUNDLES / bundle
    meta = json.loads((b / "configs" / "metadata.json").read_text(encoding="utf-8"))
    shape = meta["network_data_format"]["inputs"]["image"]["spatial_shape"]
    assert all(str(s).endswith("*n") and int(str(s)[:-2]) >= 16 for s in shape) or all(isinstance(s, int) for s in shape)
    verify_net_in_out(net_id="network_def", meta_file=str(b / "configs" / "metadata.json"),
                      config_file=str(b / "configs" / "inference.yaml"), device="cpu", n=1, any=2, bundle_root=str(b))


# small widths: the export check is about the code path, not the size (each bundle's channels option)
SMALL = {"mmgan_label2mri_3d": {"gen_channels": [4, 8, 16, 32]}, "cycleshape_ct_mri_3d": {"gen_channels": [4, 8, 8, 8]},
         "gan_pretrain_seg_2d": {"seg_channels": [4, 8, 16, 32]}, "wgan_pairs_seg_2d": {"unet_channels": [4, 4, 4]},
         "adversarial_unet_aug_2d": {"unet_channels": [4, 4, 4]}}
# networks that a bundle option puts in network_def instead of the default one
OPTIONAL_NETWORKS = {"gan_pretrain_seg_2d": {"seg_kind": "cenet"}}


def _export_and_compare(bundle, tmp_path, **overrides):
    """MONAI's ``ckpt_export`` of ``network_def`` (as the zoo's ``verify_bundle.py`` calls it) from a plain state
    dict; the loaded TorchScript module's output equals the eager network's on the metadata's input shape."""
    import torch
    from monai.bundle import ConfigParser, ckpt_export

    b = BUNDLES / bundle
    cfg, meta_file = str(b / "configs" / "inference.yaml"), str(b / "configs" / "metadata.json")
    overrides = {**SMALL[bundle], **overrides, "device": "cpu"}
    parser = ConfigParser()
    parser.read_config(cfg)
    parser.update({"bundle_root": str(b), **overrides})
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    shape = _input_shape(meta_file)
    for _ in range(2):  # training-mode passes: spectral-norm u, v and running statistics move away from their init
        net(torch.randn(*shape))
    ckpt, ts = tmp_path / "model.pt", tmp_path / "model.ts"
    torch.save(net.state_dict(), ckpt)
    ckpt_export(net_id="network_def", filepath=str(ts), ckpt_file=str(ckpt), meta_file=meta_file, config_file=cfg,
                bundle_root=str(b), **overrides)
    exported = torch.jit.load(str(ts))
    assert not any("parametrizations" in n for n, _ in exported.named_parameters())  # plain weights
    net.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(exported(x), net(x), atol=1e-5), bundle


def _input_shape(meta_file):
    meta = json.loads(open(meta_file, encoding="utf-8").read())["network_data_format"]["inputs"]["image"]
    spatial = [int(str(s)[:-2]) if str(s).endswith("*n") else int(s) for s in meta["spatial_shape"]]  # n = 1
    return [1, int(meta["num_channels"]), *spatial]


@pytest.mark.parametrize("bundle", NAMES)
def test_torchscript_export_of_network_def(bundle, tmp_path):
    """The zoo's ``ckpt_export`` (torch.jit.script): spectral-norm parametrisations are folded into plain weights
    by the generators' ``__prepare_scriptable__``, no ``**kwargs`` expansion or comprehension-ifs in ``forward``."""
    _export_and_compare(bundle, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(OPTIONAL_NETWORKS))
def test_torchscript_export_of_optional_networks(bundle, tmp_path):
    """P3's CE-Net (``--seg_kind cenet``) scripts too; so do P2's Refine-Net and PSP-Net (segmentors in training,
    not in any ``network_def``): one forward each, scripted against eager."""
    import torch

    from volgan.networks import make_segmentor

    _export_and_compare(bundle, tmp_path, **OPTIONAL_NETWORKS[bundle])
    for kind in ("refinenet", "pspnet"):
        net = make_segmentor(kind, 3, 1, 2, (4, 8, 16, 32)).eval()
        x = torch.randn(1, 1, 16, 16, 16)
        with torch.no_grad():
            assert torch.allclose(torch.jit.script(net)(x), net(x), atol=1e-5), kind


ZOO_SECTIONS = ("Model Overview", "Data", "Training Configuration", "System Configuration", "Performance",
                "MONAI Bundle Commands", "Limitations", "Citation", "References", "License")


@pytest.mark.parametrize("bundle", NAMES)
def test_readme_has_the_zoo_template_sections(bundle):
    """docs/README.md carries the model zoo's template sections (docs/readme_template.md of Project-MONAI/model-zoo
    and its bundles' READMEs), and the references link the paper (DOI or arXiv)."""
    import re

    text = (BUNDLES / bundle / "docs" / "README.md").read_text(encoding="utf-8")
    headings = [h.strip().lower() for h in re.findall(r"^#{2,3} +(.+)$", text, flags=re.M)]
    missing = [s for s in ZOO_SECTIONS if not any(h.startswith(s.lower()) for h in headings)]
    assert not missing, missing
    refs = text.split("## References", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"https://(doi\.org/10\.\d{4,9}/\S+|arxiv\.org/abs/\d{4}\.\d{4,5})", refs), refs
