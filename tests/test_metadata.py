"""Every bundle's metadata.json has what MONAI's schema requires (checked offline, no ../shared needed)."""

import json
from pathlib import Path

import pytest

from tests.conftest import BUNDLES

REQUIRED = ["schema", "version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
            "task", "description", "authors", "copyright", "network_data_format"]
TENSOR_KEYS = ["type", "format", "num_channels", "spatial_shape", "dtype", "value_range"]
BUNDLE_DIRS = sorted(p for p in BUNDLES.iterdir() if (p / "configs" / "metadata.json").is_file())


def test_there_is_a_bundle():
    assert any(p.name == "mmgan_label2mri_3d" for p in BUNDLE_DIRS)


@pytest.mark.parametrize("bundle", BUNDLE_DIRS, ids=lambda p: p.name)
def test_metadata_has_schema_keys(bundle):
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    missing = [k for k in REQUIRED if k not in meta]
    assert not missing, missing
    assert meta["schema"].endswith("meta_schema_20240725.json")
    assert isinstance(meta["required_packages_version"], dict)
    fmt = meta["network_data_format"]
    assert "image" in fmt["inputs"] and "pred" in fmt["outputs"]  # keys MONAI Label reads
    for io in (fmt["inputs"]["image"], fmt["outputs"]["pred"]):
        assert all(k in io for k in TENSOR_KEYS)


@pytest.mark.parametrize("bundle", BUNDLE_DIRS, ids=lambda p: p.name)
def test_metadata_validates_against_schema_when_available(bundle):
    schema = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "meta_schema_20240725.json"
    jsonschema = pytest.importorskip("jsonschema")
    if not schema.is_file():
        pytest.skip("MONAI's schema file is not beside the checkout (../shared/schemas)")
    meta = json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))
    jsonschema.validate(meta, json.loads(schema.read_text(encoding="utf-8")))


@pytest.mark.parametrize("bundle", BUNDLE_DIRS, ids=lambda p: p.name)
def test_bundle_interface_ids(bundle):
    import yaml

    cfg = bundle / "configs"
    train = yaml.safe_load((cfg / "train.yaml").read_text(encoding="utf-8"))
    infer = yaml.safe_load((cfg / "inference.yaml").read_text(encoding="utf-8"))
    for k in ("bundle_root", "dataset_dir", "output_dir", "device", "amp", "seed", "max_epochs", "network_def"):
        assert k in train, k
    for k in ("bundle_root", "output_dir", "device", "amp", "seed", "ckpt_path", "input", "roi_size", "sw_batch_size",
              "overlap", "network_def", "preprocessing", "postprocessing", "inferer"):
        assert k in infer, k
    assert (cfg / "multi_gpu_train.yaml").is_file() and (cfg / "evaluate.yaml").is_file()
    assert (cfg / "logging.conf").is_file()


def _optimizer_ids(node, prefix=""):
    """Config ids of every torch.optim.Adam in a parsed train.yaml (expression or _target_ form)."""
    if isinstance(node, dict):
        if node.get("_target_") == "torch.optim.Adam":
            yield prefix
            return
        for k, v in node.items():
            yield from _optimizer_ids(v, f"{prefix}#{k}" if prefix else str(k))
    elif isinstance(node, str) and "torch.optim.Adam(" in node:
        yield prefix


@pytest.mark.parametrize("bundle", BUNDLE_DIRS, ids=lambda p: p.name)
def test_every_optimiser_is_fused_and_every_loader_pinned_on_cuda_only(bundle):
    """#8: pinned training batches and fused Adam on CUDA (faster; non-finite steps skipped on the device without a host sync), the default
    for-loop Adam on a CPU. ``fused_optim`` is forced on here to instantiate every optimiser fused on the CPU."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.yaml"))
    ids = list(_optimizer_ids(parser.get()))
    assert ids, "no optimiser found"
    parser["device"] = "$torch.device('cpu')"
    assert parser.get_parsed_content("fused_optim") is False and parser.get_parsed_content("pin_memory") is False
    parser["device"] = "$torch.device('cuda')"
    assert parser.get_parsed_content("fused_optim", lazy=False) is True
    assert parser.get_parsed_content("pin_memory", lazy=False) is True
    for cfg in ("train.yaml", "multi_gpu_train.yaml"):  # every training loader pins memory on CUDA
        loaders = [ln for ln in (bundle / "configs" / cfg).read_text(encoding="utf-8").splitlines()
                   if "DataLoader(" in ln and "val_dataloader" not in ln and "@validate#" not in ln]
        assert all("pin_memory=@pin_memory" in ln for ln in loaders), cfg
    parser["device"] = "$torch.device('cpu')"
    parser["fused_optim"] = True
    for i in ids:
        opt = parser.get_parsed_content(i, lazy=False)
        assert all(g["fused"] for g in opt.param_groups), i
