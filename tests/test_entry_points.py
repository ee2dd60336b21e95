"""One-line errors on every entry point (issue #21 item 4): ``python -m monai.bundle run`` of every bundle's
train / inference / evaluate config, the ``volgan`` CLI (``evaluate`` on one case, ``export-nnunet``) and the Python
API report a ``VolganError`` as one stderr line naming the file (or option) and the problem, exit status non-zero,
no traceback, nothing written to the output folder. The bundles' ``initialize`` installs
``volgan.errors.install_excepthook``; ``VOLGAN_DEBUG=1`` brings the traceback back. Broken inputs come from the
bad-input corpus (``tests/test_bad_inputs.BAD``).

A Python start with torch + MONAI costs 5-20 s of CPU here, so the default tests run one real subprocess per kind
of entry point (a bundle run, the CLI) and drive the other bundles in-process through ``monai.bundle.run`` and the
installed ``sys.excepthook`` (what the interpreter calls on the uncaught exception); the bundles x corpus product in
subprocesses is marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import run as monai_bundle_run

import volgan
from tests.conftest import BUNDLES, tiny_case, write_pair
from tests.test_bad_inputs import AFF, BAD
from volgan.apps.cli import main
from volgan.bundle import config_files
from volgan.errors import VolganDataError, VolganError, install_excepthook

#: MONAI prints this security notice (a UserWarning) for every config it parses, before any volgan code runs
MONAI_NOTICE = re.compile(r"^parsing config_file .*GHSA-873f-pvrv-4x83")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CI": "1", "PYTHONWARNINGS": "ignore::DeprecationWarning"}
ENV.pop("VOLGAN_DEBUG", None)
LABELS = ["0", "1", "2", "3", "4"]

# the broken input each bundle's train.yaml gets in the default run, the file its error names, the problem
DEFAULT_CASE = {
    "mmgan_label2mri_3d": "NaN voxels",
    "cycleshape_ct_mri_3d": "image/label shape mismatch",
    "gan_pretrain_seg_2d": "empty label map",
    "wgan_pairs_seg_2d": "truncated .nii.gz",
    "adversarial_unet_aug_2d": "zero-byte file",
}
SLOW_CASES = ("NaN voxels", "image/label shape mismatch", "empty label map", "truncated .nii.gz")
# which corpus expectation (tests/test_bad_inputs.Bad.expect) applies to which bundle
PIPELINE = {"mmgan_label2mri_3d": "mmgan", "cycleshape_ct_mri_3d": "cycleshape", "gan_pretrain_seg_2d": "gan_pretrain_2d",
            "wgan_pairs_seg_2d": "wgan_pairs_2d", "adversarial_unet_aug_2d": "wgan_pairs_2d"}


def bad_dataset(root: Path, name: str, seed: int = 0) -> tuple[Path, Path, str]:
    """Corpus entry ``name`` written into ``root/<slug>`` (one 16^3 case, broken): (dataset, bad file, problem)."""
    bad = BAD[name]
    d = root / re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    d.mkdir(parents=True)
    item = write_pair(d, "c0", *tiny_case(np.random.RandomState(seed), (16, 16, 16)), affine=AFF)
    return Path(bad.build(d, item)), d / bad.file, bad.problem


def expected(bundle: str, name: str, folder: Path) -> tuple[Path, str]:
    file, problem = BAD[name].expect.get(PIPELINE[bundle], (BAD[name].file, BAD[name].problem))
    return folder / file, problem


def good_folder(root: Path, n: int = 1, prefix: str = "b") -> Path:
    root.mkdir(parents=True)
    rng = np.random.RandomState(1)
    for i in range(n):
        write_pair(root, f"{prefix}{i}", *tiny_case(rng, (16, 16, 16)), affine=AFF)
    return root


def train_overrides(bundle: str, ds: Path, out: Path, good_b: Path) -> dict:
    """The data options of ``bundle``'s train.yaml, tiny sizes (nothing trains: the data check fails first)."""
    common = {"output_dir": str(out), "device": "cpu", "max_epochs": 1}
    if bundle == "cycleshape_ct_mri_3d":
        shared = {1: 1, 2: 2, 3: 3, 4: 4}  # the corpus's label ids are already the shared classes
        return {**common, "domain_a": str(ds), "domain_b": str(good_b), "patch_size": [16, 16, 16],
                "label_map_a": shared, "label_map_b": shared}
    if bundle == "mmgan_label2mri_3d":
        return {**common, "dataset_dir": str(ds), "patch_size": [16, 16, 16]}
    extra = {"input_dims": 3} if bundle == "gan_pretrain_seg_2d" else {"val_dataset_dir": str(ds)}
    return {**common, "dataset_dir": str(ds), "image_size": [32, 32], **extra}


def cli_args(overrides: dict) -> list[str]:
    return [a for k, v in overrides.items()
            for a in (f"--{k}", json.dumps(v).replace(" ", "") if isinstance(v, (list, dict)) else str(v))]


def error_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines, MONAI's own security notice left out."""
    return [ln for ln in stderr.splitlines() if ln.strip() and not MONAI_NOTICE.match(ln)]


def assert_one_line(lines: list[str], path: Path | str, problem: str | None = None) -> None:
    assert len(lines) == 1, lines
    line = lines[0]
    assert "Traceback" not in line and line.startswith("volgan: error: "), line
    assert str(path) in line, (line, str(path))
    if problem is not None:
        assert re.search(problem.lstrip("^").rstrip("$"), line), (line, problem)


def nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


def bundle_subprocess(bundle: str, config: str, overrides: dict, env: dict | None = None):
    root = BUNDLES / bundle
    files = config_files(bundle, config)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]",
           "--bundle_root", str(root), *cli_args(overrides)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env or ENV)


def bundle_in_process(bundle: str, config: str, overrides: dict, capsys, monkeypatch) -> list[str]:
    """``python -m monai.bundle run`` in this process: MONAI's ``run``, then the uncaught exception handed to
    ``sys.excepthook`` as the interpreter would. Returns the stderr lines the hook wrote."""
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)  # restored after the test
    root = BUNDLES / bundle
    with pytest.raises(Exception) as e:
        monai_bundle_run(config_file=config_files(bundle, config), meta_file=str(root / "configs" / "metadata.json"),
                         logging_file=False, bundle_root=str(root), **overrides)
    assert getattr(sys.excepthook, "volgan", False), "the bundle's initialize did not install the excepthook"
    capsys.readouterr()
    sys.excepthook(e.type, e.value, e.tb)
    return error_lines(capsys.readouterr().err)


def cli_subprocess(argv):
    return subprocess.run([sys.executable, "-m", "volgan", *map(str, argv)], capture_output=True, text=True,
                          timeout=600, env=ENV)


def cli_in_process(argv, capsys):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    return rc, error_lines(capsys.readouterr().err)


@pytest.fixture(scope="module")
def good_b(tmp_path_factory):
    return good_folder(tmp_path_factory.mktemp("ep") / "good_b")


def test_bundle_run_subprocess_one_line(tmp_path, good_b):
    """The real command: ``python -m monai.bundle run`` of MM-GAN's train.yaml on a NaN image."""
    ds, bad_file, problem = bad_dataset(tmp_path, DEFAULT_CASE["mmgan_label2mri_3d"])
    out = tmp_path / "out"
    r = bundle_subprocess("mmgan_label2mri_3d", "train", train_overrides("mmgan_label2mri_3d", ds, out, good_b))
    assert r.returncode != 0
    assert_one_line(error_lines(r.stderr), bad_file, problem)
    assert "VOLGAN_DEBUG=1" in r.stderr
    nothing_written(out)


@pytest.mark.parametrize("bundle", [b for b in DEFAULT_CASE if b != "mmgan_label2mri_3d"])
def test_bundle_train_one_line(bundle, tmp_path, good_b, capsys, monkeypatch):
    name = DEFAULT_CASE[bundle]
    ds, _, _ = bad_dataset(tmp_path, name)
    bad_file, problem = expected(bundle, name, ds if ds.is_dir() else ds.parent)
    out = tmp_path / "out"
    lines = bundle_in_process(bundle, "train", train_overrides(bundle, ds, out, good_b), capsys, monkeypatch)
    assert_one_line(lines, bad_file, problem)
    nothing_written(out)


def test_debug_switch_shows_the_traceback(tmp_path, good_b, capsys, monkeypatch):
    ds, bad_file, _ = bad_dataset(tmp_path, "NaN voxels")
    monkeypatch.setenv("VOLGAN_DEBUG", "1")
    overrides = train_overrides("mmgan_label2mri_3d", ds, tmp_path / "out", good_b)
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    with pytest.raises(Exception) as e:
        monai_bundle_run(config_file=config_files("mmgan_label2mri_3d", "train"), logging_file=False,
                         bundle_root=str(BUNDLES / "mmgan_label2mri_3d"), **overrides)
    capsys.readouterr()
    sys.excepthook(e.type, e.value, e.tb)
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and f"VolganDataError: {bad_file}" in err


def test_excepthook_leaves_other_errors_alone(capsys, monkeypatch):
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    install_excepthook()
    install_excepthook()  # idempotent: one wrapper
    try:
        raise KeyError("not ours")
    except KeyError as e:
        sys.excepthook(type(e), e, e.__traceback__)
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'not ours'" in err and "volgan: error" not in err


def test_inference_missing_checkpoint_one_line(tmp_path, capsys, monkeypatch):
    """inference.yaml of every synthesis/segmentation bundle: a missing ``--ckpt_path`` names the file."""
    ds = good_folder(tmp_path / "labels")
    ckpt, out = tmp_path / "no_such_model.pt", tmp_path / "out"
    lines = bundle_in_process("mmgan_label2mri_3d", "inference",
                              {"input": str(ds), "ckpt_path": str(ckpt), "output_dir": str(out), "device": "auto"},
                              capsys, monkeypatch)
    assert_one_line(lines, ckpt)
    nothing_written(out)


def test_bundle_evaluate_one_case_one_line(tmp_path, capsys, monkeypatch):
    """evaluate.yaml (merged onto train.yaml) on a single case: the dataset named, with what fixes it."""
    ds = good_folder(tmp_path / "one")
    out = tmp_path / "run"
    lines = bundle_in_process("mmgan_label2mri_3d", "evaluate",
                              {"dataset_dir": str(ds), "output_dir": str(out), "ckpt_path": str(tmp_path / "g.pt"),
                               "device": "cpu"}, capsys, monkeypatch)
    assert_one_line(lines, ds, r"1 case\(s\) .*at least two .*add cases")
    nothing_written(out / "eval")


EVALUATE_ONE_CASE = ["evaluate", "--bundle", "wgan_pairs_seg_2d", "--device", "auto", "--quick"]


def test_cli_evaluate_one_case(tmp_path, capsys):
    """``volgan evaluate`` on one case (was ``ValueError: need at least two cases``): one line, exit 2 (in a
    subprocess: the slow ``test_cli_subcommands_subprocess``)."""
    ds = good_folder(tmp_path / "one")
    out = tmp_path / "eval"
    rc, lines = cli_in_process([*EVALUATE_ONE_CASE, "--dataset", ds, "--output-dir", out], capsys)
    assert rc == 2
    assert_one_line(lines, ds, r"1 case\(s\).*--test")
    nothing_written(out)


def test_cli_export_nnunet_bad_input_one_line(tmp_path, capsys):
    ds, bad_file, problem = bad_dataset(tmp_path, "truncated .nii.gz")
    out = tmp_path / "nnUNet_raw"
    rc, lines = cli_in_process(["export-nnunet", "--real", ds, "--output-dir", out, "--dataset-id", "7",
                                "--name", "Bad"], capsys)
    assert rc == 2
    assert_one_line(lines, bad_file, problem)
    nothing_written(out)
    rc, lines = cli_in_process(["export-nnunet", "--real", ds, "--output-dir", out, "--dataset-id", "1000",
                                "--name", "Bad"], capsys)
    assert rc == 2 and len(lines) == 1 and "1000" in lines[0], lines
    nothing_written(out)


def test_python_api_raises_one_line_volgan_errors(tmp_path):
    ds, bad_file, _ = bad_dataset(tmp_path, "NaN in a label map")
    with pytest.raises(VolganError) as e:
        volgan.synthesize(ds, tmp_path / "missing.pt", tmp_path / "synth", device="cpu")
    assert "\n" not in str(e.value) and str(bad_file) in str(e.value)
    with pytest.raises(VolganError) as e:
        volgan.synthesize(good_folder(tmp_path / "labels"), tmp_path / "missing.pt", tmp_path / "synth", device="cpu")
    assert "\n" not in str(e.value) and "missing.pt" in str(e.value)
    with pytest.raises(VolganDataError) as e:
        volgan.evaluation.evaluate_bundle("wgan_pairs_seg_2d", good_folder(tmp_path / "one"), tmp_path / "ev",
                                          quick=True)
    assert "\n" not in str(e.value) and str(tmp_path / "one") in str(e.value)
    nothing_written(tmp_path / "synth")


def test_device_auto_everywhere(tmp_path):
    """``--device auto`` is a device every bundle config accepts (CUDA when there is one): parsed with MONAI's
    ``ConfigParser`` as ``python -m monai.bundle run --device auto`` gives it, every network lands on a device."""
    from monai.bundle import ConfigParser

    for bundle in sorted(DEFAULT_CASE):
        for cfg in ("train", "inference"):
            parser = ConfigParser()
            parser.read_config(str(BUNDLES / bundle / "configs" / f"{cfg}.yaml"))
            parser.update({"bundle_root": str(BUNDLES / bundle), "device": "auto"})
            dev = parser.get_parsed_content("torch_device")
            assert dev == volgan.config.resolve_device("auto"), (bundle, cfg, dev)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(DEFAULT_CASE))
@pytest.mark.parametrize("name", SLOW_CASES)
def test_bundle_train_subprocess_corpus(bundle, name, tmp_path, good_b):
    ds, _, _ = bad_dataset(tmp_path, name)
    bad_file, problem = expected(bundle, name, ds if ds.is_dir() else ds.parent)
    out = tmp_path / "out"
    r = bundle_subprocess(bundle, "train", train_overrides(bundle, ds, out, good_b))
    assert r.returncode != 0
    assert_one_line(error_lines(r.stderr), bad_file, problem)
    nothing_written(out)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(DEFAULT_CASE))
def test_bundle_train_in_process_full_corpus(bundle, tmp_path, good_b, capsys, monkeypatch):
    """Every corpus entry a bundle must reject, through its train.yaml and the installed excepthook."""
    for name in BAD:
        if BAD[name].expect.get(PIPELINE[bundle], ()) is None:
            continue
        ds, _, _ = bad_dataset(tmp_path / "c", name)
        bad_file, problem = expected(bundle, name, ds if ds.is_dir() else ds.parent)
        out = tmp_path / "out" / name.replace(" ", "_")
        lines = bundle_in_process(bundle, "train", train_overrides(bundle, ds, out, good_b), capsys, monkeypatch)
        assert_one_line(lines, bad_file, problem)
        nothing_written(out)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(DEFAULT_CASE))
def test_inference_and_evaluate_subprocess(bundle, tmp_path):
    ds = good_folder(tmp_path / "one")
    ckpt, out = tmp_path / "no_such_model.pt", tmp_path / "out"
    r = bundle_subprocess(bundle, "inference", {"input": str(ds), "ckpt_path": str(ckpt), "output_dir": str(out),
                                                "device": "auto"})
    assert r.returncode != 0
    assert_one_line(error_lines(r.stderr), ckpt)
    nothing_written(out)


@pytest.mark.slow
def test_cli_subcommands_subprocess(tmp_path):
    """The CLI's data-reading subcommands in subprocesses on one broken input each."""
    ds, bad_file, problem = bad_dataset(tmp_path, "image/label shape mismatch")
    for argv, out in ((["check-data", ds, "--label-values", *LABELS], None),
                      (["export-nnunet", "--real", ds, "--output-dir", tmp_path / "nn", "--dataset-id", "3",
                        "--name", "X"], tmp_path / "nn"),
                      (["evaluate", "--bundle", "gan_pretrain_seg_2d", "--dataset", ds, "--output-dir",
                        tmp_path / "ev", "--quick"], tmp_path / "ev"),
                      ([*EVALUATE_ONE_CASE, "--dataset", good_folder(tmp_path / "one"), "--output-dir",
                        tmp_path / "ev1"], tmp_path / "ev1")):
        r = cli_subprocess(argv)
        assert r.returncode == 2, (argv, r.stderr[-2000:])
        lines = error_lines(r.stderr)
        assert lines and all(ln.startswith("volgan: error: ") for ln in lines), lines
        assert any(str(bad_file) in ln or str(tmp_path / "one") in ln for ln in lines), lines
        if out is not None:
            nothing_written(out)


@pytest.mark.parametrize("debug", [False, True])
def test_errors_inside_an_engine_run_are_logged_without_a_traceback(debug, caplog, capfd, monkeypatch):
    """MONAI's StatsHandler logs every exception of an engine run with its traceback before re-raising it: after
    the bundles' ``install_excepthook`` a VolganError keeps its one line there too (VOLGAN_DEBUG=1: the traceback)."""
    import logging

    from ignite.engine import Engine
    from monai.handlers import StatsHandler

    factory = logging.getLogRecordFactory()
    monkeypatch.setattr(sys, "excepthook", sys.__excepthook__)
    if debug:
        monkeypatch.setenv("VOLGAN_DEBUG", "1")
    try:
        install_excepthook()

        def step(engine, batch):
            raise VolganDataError("case7_image.nii.gz", "NaN voxels")

        engine = Engine(step)
        StatsHandler(name="volgan_test_stats").attach(engine)
        with caplog.at_level(logging.INFO), pytest.raises(VolganDataError):
            engine.run([0], max_epochs=1)
    finally:
        logging.setLogRecordFactory(factory)
    out = caplog.text + "".join(capfd.readouterr())
    assert "Exception: case7_image.nii.gz: NaN voxels" in out  # StatsHandler's own line
    assert ("Traceback" in out) == debug
