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
