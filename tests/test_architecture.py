"""The architecture as tests (issue #17): the package imports in one direction only, bundles are configuration
(no copied blocks, no control flow in YAML), every bundle passes MONAI's workflow checks, one 2D preprocessing."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import BUNDLES, tiny_case, write_cases, write_pair

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "volgan"

#: the pipeline, top to bottom: a module may import only from its own layer or the layers above it
LAYERS = (
    ("volgan.version", "volgan.errors"),
    ("volgan.config",),
    ("volgan.io",),
    ("volgan.distributed",),
    ("volgan.bundle",),
    ("volgan.data",),
    ("volgan.networks",),
    ("volgan.losses",),
    ("volgan.handlers",),
    ("volgan.engines",),
    ("volgan.tracking",),
    ("volgan.inferers",),
    ("volgan.synthesis",),
    ("volgan.evaluation",),
    ("volgan.apps",),
)
#: imports allowed inside functions: optional dependencies only
OPTIONAL = {"mlflow", "monailabel", "radiomics"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    for i, group in enumerate(LAYERS):
        if any(module == g or module.startswith(g + ".") for g in group):
            return i
    raise AssertionError(f"{module} is in no layer of tests/test_architecture.py: place it")


def _imports() -> dict[str, list[tuple[int, str, list[str], bool]]]:
    """module -> [(line, imported module, names, inside a function)] for every volgan module but the package root."""
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        if f.name == "__main__.py" or f == PACKAGE / "__init__.py" or "template" in f.parts:
            continue
        mod, tree = _module_name(f), ast.parse(f.read_text(encoding="utf-8"))
        inside = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                  for n in ast.walk(fn)}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found += [(node.lineno, a.name, [], id(node) in inside) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.append((node.lineno, node.module, [a.name for a in node.names], id(node) in inside))
        out[mod] = found
    return out


def test_imports_go_one_way_without_cycles_private_names_or_hidden_imports():
    imports = _imports()
    problems = []
    graph: dict[str, set[str]] = {m: set() for m in imports}
    for mod, found in imports.items():
        for line, target, names, in_function in found:
            if in_function and target.split(".")[0] not in OPTIONAL:
                problems.append(f"{mod}:{line}: function-level import of {target} (only optional dependencies)")
            if not target.startswith("volgan"):
                continue
            if _layer(target) > _layer(mod):
                problems.append(f"{mod}:{line}: upward import of {target}")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{mod}:{line}: private name(s) {private} imported from {target}")
            for n in names:  # ``from volgan.data import slices`` names a module; ``import volgan.x`` too
                full = f"{target}.{n}"
                graph[mod].add(full if full in imports else target)
            if not names:
                graph[mod].add(target)
    # cycles among modules (a package's __init__ re-exporting its own modules is not a cycle)
    def package_of(m):
        return m if (PACKAGE / Path(*m.split(".")[1:]) / "__init__.py").is_file() else m.rsplit(".", 1)[0]

    edges = {m: {t for t in ts if t in imports and t != m and not m.startswith(t + ".") and package_of(m) != t}
             for m, ts in graph.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in edges[m]:
            if state.get(t) == 1:
                problems.append("import cycle: " + " -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [m])
    assert not problems, "\n".join(problems)


def test_the_layering_is_enforced_by_this_test():
    """The check above would catch an upward import (mutation: a data module importing the evaluation package)."""
    assert _layer("volgan.data.slices") < _layer("volgan.evaluation.harness")
    assert _layer("volgan.inferers") < _layer("volgan.synthesis.api") < _layer("volgan.apps.cli")


# --- bundles are configuration -------------------------------------------------------------------------------

_CONTROL = re.compile(r"\bif\b.*\belse\b|\blambda\b|\bfor\b .* \bin\b|\[\s*-?\d*\s*:\s*-?\d*\s*\]|\band \(|\bor \(")


def _config_lines(f: Path) -> list[tuple[int, str]]:
    out = []
    for n, ln in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
        s = re.sub(r"\s+#.*$", "", ln).rstrip()
        t = s.strip()
        if t and not t.startswith("#") and not t.startswith("imports") and not t.startswith("- $import"):
            out.append((n, s))
    return out


def _configs() -> list[Path]:
    return sorted(BUNDLES.glob("*/configs/*.yaml")) + sorted(BUNDLES.glob("*/configs/*.json"))


def _shared_blocks() -> list[tuple[str, tuple[str, ...]]]:
    """Blocks of 6 identical lines in two bundles' configs (what ``../shared/tools/config-dups`` reports)."""
    lines = {f: _config_lines(f) for f in _configs()}
    shared = []
    for a, b in itertools.combinations(lines, 2):
        if a.parts[-3] == b.parts[-3]:
            continue
        blocks = {tuple(s for _, s in lines[b][i:i + 6]) for i in range(len(lines[b]) - 5)}
        shared += [(f"{a.relative_to(ROOT)}:{lines[a][i][0]} ~ {b.relative_to(ROOT)}", block)
                   for i in range(len(lines[a]) - 5) if (block := tuple(s for _, s in lines[a][i:i + 6])) in blocks]
    return shared


#: the one pair of bundles allowed to share structure: P4 trains its downstream segmentor with P5's stage (the same
#: U-Net, mixed minibatches, early stopping on the validation loss: SPEC.md), so their ``train#stages`` read alike
SAME_DOWNSTREAM_STAGE = ("bundles/adversarial_unet_aug_2d/configs/train.yaml", "bundles/wgan_pairs_seg_2d/configs/train.yaml")


def test_no_structure_is_copied_between_bundles():
    """Shared logic lives in volgan, not in copies: two bundles' configs never share a 6-line block of structure
    (components, handler lists, datasets, workflows). Blocks made only of top-level parameter declarations
    (``amp: true``, ``device: ...``: the bundle interface every bundle declares, DESIGN.md) do not count, nor
    P4's use of P5's downstream stage (``SAME_DOWNSTREAM_STAGE``); any other shared block fails."""
    copied = [where for where, block in _shared_blocks() if any(ln.startswith((" ", "-", "{", '"')) or
                                                                not re.match(r"^[A-Za-z_#]+: ", ln) for ln in block)]
    other = [w for w in copied if (w.split(":")[0], w.split(" ~ ")[1]) != SAME_DOWNSTREAM_STAGE]
    assert not other, "\n".join(other[:20])
    assert len(copied) - len(other) <= 4, "P4 and P5 share more than their downstream stage"


def test_no_control_flow_in_bundle_configs():
    found = [f"{f.relative_to(ROOT)}:{n}: {s.strip()}" for f in _configs() for n, s in _config_lines(f)
             if "$" in s and _CONTROL.search(s.split("$", 1)[1])]
    assert not found, "\n".join(found)


def test_evaluate_and_multi_gpu_are_overrides_of_train():
    """The model zoo's layout: evaluate.yaml and multi_gpu_train.yaml restate nothing of train.yaml's networks."""
    import yaml

    for bundle in sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir()):
        train = yaml.safe_load((BUNDLES / bundle / "configs" / "train.yaml").read_text(encoding="utf-8"))
        for name in ("evaluate", "multi_gpu_train"):
            over = yaml.safe_load((BUNDLES / bundle / "configs" / f"{name}.yaml").read_text(encoding="utf-8"))
            assert "imports" not in over and "bundle_root" not in over, (bundle, name)
            defined = [k for k in over if k.endswith("_def") or k in ("lr_g", "gen_channels", "max_epochs")]
            assert not defined, f"{bundle}/{name}.yaml restates {defined} of train.yaml"
            assert set(train) & {"network_def"} and "run" in train


# --- MONAI's workflow checks ------------------------------------------------------------------------------------

def _tiny_3d(tmp_path: Path) -> Path:
    rng = np.random.RandomState(0)
    d = tmp_path / "vol3d"
    d.mkdir()
    for i in range(3):
        write_pair(d, f"case{i}", *tiny_case(rng))
    return d


TRAIN_OVERRIDES = {
    "mmgan_label2mri_3d": dict(patch_size=[16, 16, 16], gen_channels=[4, 8, 16, 32], disc_channels=[8, 16, 16]),
    "cycleshape_ct_mri_3d": dict(patch_size=[16, 16, 16], gen_channels=[8, 16, 32, 32], disc_channels=[8, 16, 16, 16],
                                 disc_strides=[2, 2, 1, 1], seg_channels=[8, 16, 32, 64], label_map_a={1: 1, 2: 2, 3: 3, 4: 4},
                                 label_map_b={1: 1, 2: 2, 3: 3, 4: 4}, intensity_a={"kind": "percentile"}),
}


@pytest.mark.parametrize("bundle", ["mmgan_label2mri_3d", "cycleshape_ct_mri_3d", "gan_pretrain_seg_2d",
                                    "adversarial_unet_aug_2d", "wgan_pairs_seg_2d"])
def test_train_and_inference_configs_pass_monai_workflow_checks(bundle, tmp_path):
    from monai.bundle import ConfigParser, ConfigWorkflow

    from volgan.evaluation.registry import METHODS

    cfg = BUNDLES / bundle / "configs"
    data = _tiny_3d(tmp_path) if bundle in TRAIN_OVERRIDES else write_cases(tmp_path / "vol2d", 3, depth=6)
    overrides = {**METHODS[bundle].quick, **TRAIN_OVERRIDES.get(bundle, {}), "device": "cpu",
                 "output_dir": str(tmp_path / "out")}
    overrides.pop("roi_size", None)
    data_ids = {"domain_a": str(data), "domain_b": str(data)} if bundle == "cycleshape_ct_mri_3d" else \
        {"dataset_dir": str(data)}
    wf = ConfigWorkflow(config_file=str(cfg / "train.yaml"), meta_file=str(cfg / "metadata.json"),
                        logging_file=None, workflow_type="train", bundle_root=str(cfg.parent), **data_ids,
                        **overrides)
    wf.initialize()
    assert wf.check_properties() == [], f"{bundle}: MONAI TrainProperties missing"
    assert wf.parser.get_parsed_content("train#trainer#max_epochs") is not None
    parser = ConfigParser()
    parser.read_config(str(cfg / "inference.yaml"))
    torch.save(parser.get_parsed_content("network_def").state_dict(), tmp_path / "model.pt")  # random weights
    infer = ConfigWorkflow(config_file=str(cfg / "inference.yaml"), meta_file=str(cfg / "metadata.json"),
                           logging_file=None, workflow_type="infer", bundle_root=str(cfg.parent), input=str(data),
                           ckpt_path=str(tmp_path / "model.pt"), output_dir=str(tmp_path / "inf"), device="cpu")
    infer.initialize()
    assert infer.check_properties() == [], f"{bundle}: MONAI InferProperties missing"


# --- one 2D preprocessing ---------------------------------------------------------------------------------------

class _Recorder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inputs: list[torch.Tensor] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return torch.cat([x, -x], 1)


@pytest.mark.parametrize("size", [None, (32, 32), (16, 20)])
def test_training_and_inference_feed_the_network_the_same_slice(size, tmp_path):
    """A slice of a volume reaches the 2D network identically in training (``SliceDataset``) and in inference (the
    2D bundles' ``SlicewiseSegmentation`` preprocessing, then ``SlicewiseInferer``)."""
    from volgan.data import SliceDataset
    from volgan.inferers import SlicewiseSegmentation

    folder = write_cases(tmp_path / "v", 1, depth=5)
    item = {"image": str(folder / "c0_image.nii.gz"), "label": str(folder / "c0_label.nii.gz")}
    train = SliceDataset([item], axis=2, size=size, empty_fraction=float("inf"))
    pipe = SlicewiseSegmentation(image_size=size, slice_axis=2, batch_size=2, spatial_dims=3)
    x = pipe.preprocessing()({"image": item["image"]})["image"]
    net = _Recorder()
    pipe.inferer()(x[None], net)
    seen = torch.cat(net.inputs)
    assert seen.shape[0] == len(train) == 5
    for k, s in enumerate(train.slices):
        assert torch.equal(seen[k], s["image"].float()), k


def test_every_bundle_exposes_the_same_trainer_options_and_passes_them_to_every_volgan_trainer():
    import yaml

    from volgan.config import TRAINER_OPTIONS

    for cfg in sorted(BUNDLES.glob("*/configs/train.yaml")):
        config = yaml.safe_load(cfg.read_text(encoding="utf-8"))
        missing = [k for k in TRAINER_OPTIONS if k not in config]
        assert not missing, f"{cfg}: no top-level {missing}"
        assert config["trainer_options"] == {k: f"@{k}" for k in TRAINER_OPTIONS}, cfg
        trainers = []

        def walk(node):
            if isinstance(node, dict):
                if str(node.get("_target_", "")).startswith("volgan.engines.") and "Trainer" in node["_target_"]:
                    trainers.append(node)
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(config)
        assert trainers, cfg
        assert all(t.get("options") == "@trainer_options" for t in trainers), cfg
