"""The bad-input corpus (issue #9): deliberately broken inputs, built here, run through ``volgan check-data``, every
bundle's data loading/validation (the expressions its ``train.yaml`` evaluates before training) and the synthesis
bundle's inference (``volgan synthesize``). Each broken input gives one ``VolganDataError``/``VolganConfigError``
line naming the file and the problem, exit status 2 from the CLI, no traceback and no partial output. Relative
paths and unicode/spaces in paths are not errors: they must work everywhere.

Nothing trains here: the bundles' configs are parsed with MONAI's ``ConfigParser`` and only the data expressions
are evaluated (``train#datalist``, ``train#check`` + ``train#dataset_a``, ``slices``).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.conftest import tiny_case, write_pair
from volgan.bundle import bundle_path
from volgan.apps.cli import main
from volgan.errors import VolganConfigError, VolganDataError, VolganError, find_volgan_error

AFF = np.diag([2.0, 2.0, 2.0, 1.0])
LABELS = ["0", "1", "2", "3", "4"]
PIPELINES = ("check-data", "mmgan", "cycleshape", "gan_pretrain_2d", "wgan_pairs_2d", "synthesize")
# 16^3 generator input, the synthesis bundle's default generator widths (the CLI cannot change them)
GEN_CHANNELS = (16, 32, 64, 128)


@dataclass
class Bad:
    """A broken input: ``build(folder)`` writes it and returns the dataset to pass (folder or datalist JSON);
    ``file`` is the file the error must name (relative to the case folder) and ``problem`` a regex of the problem.
    ``expect`` overrides both per pipeline: ``(file, problem)``, or ``None`` where the input is valid by design."""

    build: object
    file: str
    problem: str
    expect: dict = field(default_factory=dict)


def _write(path: Path, array: np.ndarray, affine=AFF) -> None:
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _read(path: str | Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj).copy()


def _datalist(folder: Path, entries, name: str = "datalist.json") -> Path:
    p = folder / name
    p.write_text(json.dumps({"training": entries}), encoding="utf-8")
    return p


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def _b_truncated_gz(d, it):
    _truncate(Path(it["label"]), Path(it["label"]).stat().st_size // 2)
    return d


def _b_truncated_nii(d, it):
    p = d / "c0_label.nii"
    _write(p, _read(it["label"]))
    Path(it["label"]).unlink()
    _truncate(p, 352 + (p.stat().st_size - 352) // 2)  # header intact, half of the voxels
    return d


def _b_corrupt(d, it):
    Path(it["label"]).write_bytes(gzip.compress(b"this is not a NIfTI header " * 40))
    return d


def _b_not_gzip(d, it):
    Path(it["image"]).write_bytes(np.random.RandomState(1).bytes(4000))
    return d


def _b_zero(d, it):
    Path(it["label"]).write_bytes(b"")
    return d


def _b_wrong_ext(d, it):
    Path(it["label"]).rename(d / "c0_label.txt")
    return _datalist(d, [{"image": "c0_image.nii.gz", "label": "c0_label.txt"}])


def _b_two_d(d, it):
    _write(Path(it["image"]), _read(it["image"])[..., 8])
    _write(Path(it["label"]), _read(it["label"])[..., 8])
    return d


def _b_four_d_image(d, it):
    _write(Path(it["image"]), np.stack([_read(it["image"])] * 3, -1))
    return d


def _b_four_d_label(d, it):
    _write(Path(it["label"]), np.stack([_read(it["label"])] * 2, -1))
    return d


def _b_shape(d, it):
    img, _ = tiny_case(np.random.RandomState(3), (16, 16, 20))
    _write(Path(it["image"]), img.astype(np.float32))
    return d


def _b_affine(d, it):
    aff = AFF.copy()
    aff[:3, 3] = [5.0, 0.0, 0.0]
    _write(Path(it["label"]), _read(it["label"]), aff)
    return d


def _b_nan(d, it):
    img = _read(it["image"])
    img[3, 3, 3] = np.nan
    _write(Path(it["image"]), img)
    return d


def _b_inf(d, it):
    img = _read(it["image"])
    img[3, 3, 3], img[4, 4, 4] = np.inf, -np.inf
    _write(Path(it["image"]), img)
    return d


def _b_nan_label(d, it):
    lab = _read(it["label"]).astype(np.float32)
    lab[8, 8, 8] = np.nan
    _write(Path(it["label"]), lab)
    return d


def _b_empty_label(d, it):
    _write(Path(it["label"]), np.zeros((16, 16, 16), np.uint8))
    return d


def _b_outside(d, it):
    lab = _read(it["label"])
    lab[lab == 4] = 7
    _write(Path(it["label"]), lab)
    return d


def _b_non_integer(d, it):
    _write(Path(it["label"]), _read(it["image"]) / 7.0 + 0.5)  # an image where the label map should be
    return d


def _b_missing(d, it):
    Path(it["label"]).unlink()
    return _datalist(d, [{"image": "c0_image.nii.gz", "label": "c0_label.nii.gz"}])


def _b_unpaired_folder(d, it):
    Path(it["label"]).rename(d / "c1_label.nii.gz")
    return d


def _b_missing_key(d, it):
    return _datalist(d, [{"image": "c0_image.nii.gz"}])


def _b_empty_datalist(d, it):
    return _datalist(d, [])


def _b_invalid_json(d, it):
    p = d / "datalist.json"
    p.write_text('{"training": [{"image": "c0_image.nii.gz", ', encoding="utf-8")
    return p


def _b_not_utf8(d, it):
    p = d / "datalist.json"
    p.write_bytes(b'{"training": [{"image": "\xff\xfe.nii.gz"}]}')
    return p


def _b_json_shape(d, it):
    p = d / "datalist.json"
    p.write_text(json.dumps({"training": {"image": "c0_image.nii.gz", "label": "c0_label.nii.gz"}}), encoding="utf-8")
    return p


def _b_folder(d, it):
    Path(it["label"]).unlink()
    (d / "c0_label.nii.gz").mkdir()
    (d / "c0_label.nii.gz" / "notes.txt").write_text("not a DICOM series", encoding="utf-8")
    return _datalist(d, [{"image": "c0_image.nii.gz", "label": "c0_label.nii.gz"}])


def _b_bomb(d, it):
    """A 300-byte file whose header claims 4096^3 voxels: gunzipped it would be 64 GiB of voxels."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(np.uint8)
    hdr.set_data_shape((4096, 4096, 4096))
    hdr.set_sform(AFF, code=1)
    Path(it["label"]).write_bytes(gzip.compress(hdr.binaryblock + b"\0" * 4 + b"\0" * 4096))
    return d


def _b_huge_label(d, it):
    lab = _read(it["label"]).astype(np.int32)
    lab[2, 2, 2] = 2**31 - 1
    _write(Path(it["label"]), lab)
    return d


def _b_nested_json(d, it):
    p = d / "datalist.json"
    p.write_text('{"training": ' + "[" * 100000 + "]" * 100000 + "}", encoding="utf-8")
    return p


def _write_sform(path: Path, array: np.ndarray, aff: np.ndarray) -> None:
    """Write ``array`` with ``aff`` stored verbatim as the sform (nibabel's writer would refuse to decompose it)."""
    hdr = nib.Nifti1Header()
    hdr.set_data_dtype(array.dtype)
    hdr.set_data_shape(array.shape)
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = aff[0], aff[1], aff[2]
    hdr["pixdim"][1:4] = 2.0
    nib.save(nib.Nifti1Image(array, None, header=hdr), str(path))


def _b_singular_affine(d, it):
    aff = AFF.copy()
    aff[2, 2] = 0.0  # zero spacing along z: every slice at one position
    for key in ("image", "label"):
        _write_sform(Path(it[key]), _read(it[key]), aff)
    return d


def _b_nan_affine(d, it):
    aff = AFF.copy()
    aff[0, 3] = np.nan
    for key in ("image", "label"):
        _write_sform(Path(it[key]), _read(it[key]), aff)
    return d


def _b_huge_intensity(d, it):
    img = _read(it["image"])
    img[5, 5, 5] = 1e30
    _write(Path(it["image"]), img)
    return d


def _b_one_voxel(d, it):
    _write(Path(it["image"]), np.ones((1, 1, 1), np.float32))
    _write(Path(it["label"]), np.ones((1, 1, 1), np.uint8))
    return d


def _b_constant(d, it):
    _write(Path(it["image"]), np.full((16, 16, 16), 5.0, np.float32))
    return d


def _b_ambiguous(d, it):
    _write(d / "c0_image.nii", _read(it["image"]))  # c0_image.nii.gz and c0_image.nii: which is the image?
    return d


def _b_broken_link(d, it):
    Path(it["label"]).unlink()
    os.symlink(d / "moved_away.nii.gz", it["label"])
    return d


IMAGE_ONLY = {"synthesize": None}  # synthesis reads label maps only: a broken image is not its input
CORRUPT = r"unreadable or corrupt image \("
BAD = {
    "truncated .nii.gz": Bad(_b_truncated_gz, "c0_label.nii.gz", CORRUPT + r"EOFError: Compressed file ended"),
    "truncated .nii": Bad(_b_truncated_nii, "c0_label.nii",
                          CORRUPT + r"OSError: Expected 4096 bytes, got 2048 bytes from c0_label.nii - could the file"),
    "corrupt NIfTI (garbage header)": Bad(_b_corrupt, "c0_label.nii.gz", CORRUPT + "ImageFileError: Cannot work out"),
    "corrupt NIfTI (not gzip)": Bad(_b_not_gzip, "c0_image.nii.gz", CORRUPT + ".*not a gzip file", IMAGE_ONLY),
    "zero-byte file": Bad(_b_zero, "c0_label.nii.gz", r"^empty file \(0 bytes\)$"),
    "wrong extension": Bad(_b_wrong_ext, "c0_label.txt", r"^unsupported file type \(expected one of .nii.gz"),
    "2D where 3D is expected": Bad(
        _b_two_d, "c0_image.nii.gz", r"^expected a 3D volume, got 2D shape \(16, 16\)$",
        {"cycleshape": ("c0_image.nii.gz", r"^domain A: expected 3 spatial dims, got shape \(16, 16\)"),
         "wgan_pairs_2d": None,  # the 2D bundles accept 2D images; gan_pretrain_2d runs with input_dims=3
         "synthesize": ("c0_label.nii.gz", r"^expected a 3D volume, got 2D shape \(16, 16\)$")}),
    "4D image with 3 channels": Bad(
        _b_four_d_image, "c0_image.nii.gz", r"^expected a 3D volume with one channel, got 4D shape \(16, 16, 16, 3\)",
        {**IMAGE_ONLY,
         "cycleshape": ("c0_image.nii.gz", r"^domain A: expected 3 spatial dims, got shape \(16, 16, 16, 3\)")}),
    "4D label map with 2 channels": Bad(
        _b_four_d_label, "c0_label.nii.gz", r"^expected a 3D volume with one channel, got 4D shape \(16, 16, 16, 2\)"),
    "image/label shape mismatch": Bad(
        _b_shape, "c0_label.nii.gz",
        r"^shape \(16, 16, 16\) does not match image .*c0_image.nii.gz shape \(16, 16, 20\)$",
        IMAGE_ONLY),
    "image/label affine mismatch": Bad(
        _b_affine, "c0_label.nii.gz", r"^affine differs from image .*c0_image.nii.gz \(max diff 5\)$", IMAGE_ONLY),
    "NaN voxels": Bad(_b_nan, "c0_image.nii.gz", r"^contains 1 NaN and 0 Inf voxels$", IMAGE_ONLY),
    "Inf voxels": Bad(_b_inf, "c0_image.nii.gz", r"^contains 0 NaN and 2 Inf voxels$", IMAGE_ONLY),
    "NaN in a label map": Bad(_b_nan_label, "c0_label.nii.gz", r"^contains 1 NaN and 0 Inf voxels$"),
    "empty label map": Bad(
        _b_empty_label, "c0_label.nii.gz", r"^empty label map \(only background 0\)$",
        {"cycleshape": ("c0_label.nii.gz", r"^domain A has none of the shared classes after mapping")}),
    "label values outside the configured set": Bad(
        _b_outside, "c0_label.nii.gz", r"^label values \[7\] not in the configured set \[0, 1, 2, 3, 4\]$",
        # by design: P2 maps unlisted ids to background; the 2D bundles select by `foreground`, no fixed set
        {"cycleshape": None, "gan_pretrain_2d": None, "wgan_pairs_2d": None}),
    "image where a label map is expected": Bad(
        _b_non_integer, "c0_label.nii.gz", r"^label map has non-integer values \(is this an image"),
    "datalist entry with a missing file": Bad(
        _b_missing, "c0_label.nii.gz", r"^does not exist \(entry 0 'label' of .*datalist.json\)$"),
    "unpaired folder (label without image)": Bad(
        _b_unpaired_folder, "c1_label.nii.gz", r"^label without an image \(no c1_image",
        {"synthesize": None}),  # synthesis needs label maps alone
    "datalist entry without a label": Bad(
        _b_missing_key, "datalist.json", r"^entry 0 has no 'label'$",
        # synthesis takes "label", else "image", of each entry: here the image, which is no label map
        {"synthesize": ("c0_image.nii.gz", r"^label map has non-integer values")}),
    "empty datalist": Bad(_b_empty_datalist, "datalist.json", r"^datalist is empty$"),
    "datalist that is not valid JSON": Bad(
        _b_invalid_json, "datalist.json", r"^not valid JSON \(Expecting property name .* at line 1 column 44\)$"),
    "datalist that is not UTF-8": Bad(_b_not_utf8, "datalist.json", r"^cannot read datalist \('utf-8' codec"),
    "datalist 'training' not a list": Bad(_b_json_shape, "datalist.json", r"^'training' must be a list of"),
    "folder where a file is expected": Bad(_b_folder, "c0_label.nii.gz", r"^is a folder but not a DICOM series$"),
    "decompression bomb (header claims 4096^3)": Bad(
        _b_bomb, "c0_label.nii.gz", r"^the header claims a 4096x4096x4096 grid \(68,719,476,736 voxels\), more than"),
    "label value 2^31-1": Bad(  # loaded as float32: 2^31 - 1 reads as 2^31
        _b_huge_label, "c0_label.nii.gz", r"^label values \[214748364[78]\] not in the configured set",
        {p: ("c0_label.nii.gz", r"^label values from 0 to 214748364[78]: label maps hold values 0 .. 65535")
         for p in ("cycleshape", "gan_pretrain_2d", "wgan_pairs_2d")}),
    "datalist nested 100000 deep": Bad(_b_nested_json, "datalist.json", r"JSON nested too deeply"),
    "singular affine (zero spacing)": Bad(_b_singular_affine, "c0_image.nii.gz", r"^the affine .* is singular",
                                          {"synthesize": ("c0_label.nii.gz", r"^the affine .* is singular")}),
    "NaN in the affine": Bad(_b_nan_affine, "c0_image.nii.gz", r"^the affine .* is not finite",
                             {"synthesize": ("c0_label.nii.gz", r"^the affine .* is not finite")}),
    "intensity 1e30": Bad(_b_huge_intensity, "c0_image.nii.gz", r"^intensities up to 1e\+30", IMAGE_ONLY),
    "one-voxel volume": Bad(_b_one_voxel, "c0_image.nii.gz", r"^a grid of 1x1x1 voxels is too small",
                            {"synthesize": ("c0_label.nii.gz", r"^a grid of 1x1x1 voxels is too small")}),
    "constant image": Bad(_b_constant, "c0_image.nii.gz", r"^the image is constant \(5 everywhere\)", IMAGE_ONLY),
    "two images for one case": Bad(_b_ambiguous, ".", r"^two images for case 'c0' \(c0_image.nii", {"synthesize": None}),
    "broken symbolic link": Bad(_b_broken_link, "c0_label.nii.gz", r"broken symbolic link"),
}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Every broken input in its own folder, a good domain B for the unpaired bundle, a generator checkpoint."""
    root = tmp_path_factory.mktemp("corpus")
    rng = np.random.RandomState(0)
    cases = {}
    for name, bad in BAD.items():
        d = root / _slug(name)
        d.mkdir()
        item = write_pair(d, "c0", *tiny_case(rng, (16, 16, 16)), affine=AFF)
        cases[name] = (d, Path(bad.build(d, item)))
    good_b = root / "good_domain_b"
    good_b.mkdir()
    write_pair(good_b, "b0", *tiny_case(rng, (16, 16, 16)), affine=AFF)
    # good inputs that must work: relative paths in a datalist; unicode and spaces in folder and file names
    rel = root / "relative"
    (rel / "sub").mkdir(parents=True)
    write_pair(rel / "sub", "c0", *tiny_case(rng, (16, 16, 16)), affine=AFF)
    _datalist(rel, [{"image": "sub/c0_image.nii.gz", "label": "./sub/../sub/c0_label.nii.gz"}])
    uni = root / "dätä mit Leerzeichen 数据"
    uni.mkdir()
    write_pair(uni, "é case 1", *tiny_case(rng, (16, 16, 16)), affine=AFF)
    _datalist(uni, [{"image": "é case 1_image.nii.gz", "label": "é case 1_label.nii.gz"}], "liste ü.json")
    from volgan.networks import SNUNetGenerator

    torch.manual_seed(0)
    ckpt = root / "generator.pt"
    torch.save({"model": SNUNetGenerator(3, 5, 1, channels=GEN_CHANNELS).state_dict()}, ckpt)
    return {"root": root, "cases": cases, "good_b": good_b, "ckpt": ckpt,
            "good": {"relative datalist": rel / "datalist.json", "unicode folder": uni,
                     "unicode datalist": uni / "liste ü.json"}}


def _expected(name: str, pipeline: str):
    bad = BAD[name]
    return bad.expect.get(pipeline, (bad.file, bad.problem))


def _parse(bundle: str, keys, **overrides):
    """Evaluate ``keys`` of ``bundle``'s train.yaml as ``run_bundle`` would (a VolganError wrapped by MONAI's
    config machinery comes back as itself), without building the trainers."""
    from monai.bundle import ConfigParser

    root = bundle_path(bundle)
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(root), "device": "cpu", **overrides})
    try:
        return [parser.get_parsed_content(k) for k in keys]
    except Exception as e:  # noqa: BLE001
        err = find_volgan_error(e)
        if err is not None and err is not e:
            raise err from e
        raise


def _run_pipeline(pipeline: str, ds: Path, corpus, out: Path):
    if pipeline == "mmgan":
        return _parse("mmgan_label2mri_3d", ["train#datalist"], dataset_dir=str(ds), output_dir=str(out))
    if pipeline == "cycleshape":
        return _parse("cycleshape_ct_mri_3d", ["train#check", "train#dataset_a", "train#dataset_b"],
                      domain_a=str(ds), domain_b=str(corpus["good_b"]), patch_size=[16, 16, 16], output_dir=str(out),
                      label_map_a={1: 1, 2: 2, 3: 3, 4: 4}, label_map_b={1: 1, 2: 2, 3: 3, 4: 4})
    if pipeline == "gan_pretrain_2d":
        return _parse("gan_pretrain_seg_2d", ["slices"], dataset_dir=str(ds), output_dir=str(out), input_dims=3,
                      image_size=[32, 32])
    if pipeline == "wgan_pairs_2d":
        return _parse("wgan_pairs_seg_2d", ["slices"], dataset_dir=str(ds), val_dataset_dir=str(ds),
                      output_dir=str(out), image_size=[32, 32])
    raise ValueError(pipeline)


def _cli(argv, capsys):
    """``volgan <argv>`` in-process: (exit status, stderr lines). Warnings other than deprecations would be
    extra stderr lines from the real command, so none may be raised."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    quiet = (DeprecationWarning, PendingDeprecationWarning)  # hidden by Python's default filters
    shown = [str(w.message) for w in caught if not issubclass(w.category, quiet)]
    assert not shown, shown
    return rc, [ln for ln in captured.err.splitlines() if ln.strip()], captured.out


def _synth_argv(ds, corpus, out, *extra):
    return ["synthesize", ds, "--ckpt-path", corpus["ckpt"], "--output-dir", out, "--device", "cpu",
            "--roi-size", "16", "16", "16", *extra]


def _assert_one_line(lines, path: Path, problem: str):
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    prefix = f"volgan: error: {path}: "
    assert lines[0].startswith(prefix), (lines[0], prefix)
    assert re.search(problem, lines[0][len(prefix):]), (lines[0], problem)


def _assert_among_lines(lines, path: Path, problem: str):
    """check-data reports every problem of every file (#21): one line each, the expected one among them."""
    assert lines and all(ln.startswith("volgan: error: ") and "Traceback" not in ln for ln in lines), lines
    prefix = f"volgan: error: {path}: "
    assert any(ln.startswith(prefix) and re.search(problem, ln[len(prefix):]) for ln in lines), (lines, prefix)


def _nothing_written(out: Path) -> None:
    """No partial output: the folder is absent or empty (no files, no leftover staging folder)."""
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


CASES = [(name, p) for name in BAD for p in PIPELINES if _expected(name, p) is not None]
ACCEPTED = [(name, p) for name in BAD for p in PIPELINES if _expected(name, p) is None]


def test_corpus_size():
    """The corpus: 35 broken inputs, 196 (input, pipeline) runs that must fail and 14 that are valid by design."""
    assert len(BAD) == 35
    assert len(CASES) == 196 and len(ACCEPTED) == 14, (len(CASES), len(ACCEPTED))


@pytest.mark.parametrize("name,pipeline", CASES, ids=[f"{p}-{_slug(n)}" for n, p in CASES])
def test_bad_input(name, pipeline, corpus, capsys, tmp_path):
    folder, ds = corpus["cases"][name]
    file, problem = _expected(name, pipeline)
    bad_file = folder / file
    out = tmp_path / "out"
    if pipeline == "check-data":
        rc, lines, _ = _cli(["check-data", ds, "--label-values", *LABELS], capsys)
        assert rc == 2
        _assert_among_lines(lines, bad_file, problem)
        return
    if pipeline == "synthesize":
        rc, lines, _ = _cli(_synth_argv(ds, corpus, out), capsys)
        assert rc == 2
        _assert_one_line(lines, bad_file, problem)
        _nothing_written(out)
        return
    with pytest.raises(VolganError) as e:
        _run_pipeline(pipeline, ds, corpus, out)
    err = e.value
    assert isinstance(err, (VolganDataError, VolganConfigError))
    assert "\n" not in str(err), str(err)
    assert err.path == str(bad_file), (err.path, str(bad_file))
    assert re.search(problem, err.problem), (err.problem, problem)
    _nothing_written(out)


@pytest.mark.parametrize("name,pipeline", ACCEPTED, ids=[f"{p}-{_slug(n)}" for n, p in ACCEPTED])
def test_valid_by_design(name, pipeline, corpus, capsys, tmp_path):
    """The corpus entries a pipeline accepts on purpose (see ``Bad.expect``) really are accepted."""
    folder, ds = corpus["cases"][name]
    if pipeline == "synthesize":  # the label maps are fine: the synthesis bundle's input check passes
        from volgan.data import label_map_inputs as check_inputs

        assert len(check_inputs(ds, [0, 1, 2, 3, 4], 3)) == 1
    else:
        assert _run_pipeline(pipeline, ds, corpus, tmp_path / "out")


@pytest.mark.parametrize("good", ["relative datalist", "unicode folder", "unicode datalist"])
def test_relative_and_unicode_paths_work_everywhere(good, corpus, capsys, tmp_path):
    """Relative datalist entries resolve against the datalist's folder (decathlon/MONAI convention); unicode and
    spaces in folder and file names are ordinary paths. Every pipeline accepts them."""
    ds = corpus["good"][good]
    rc, lines, stdout = _cli(["check-data", ds, "--label-values", *LABELS], capsys)
    assert rc == 0 and not lines and "1 valid (image, label) pairs" in stdout
    (items,) = _run_pipeline("mmgan", ds, corpus, tmp_path / "m")
    assert len(items) == 1 and all(Path(items[0][k]).is_file() for k in ("image", "label"))
    _run_pipeline("cycleshape", ds, corpus, tmp_path / "c")
    (slices,) = _run_pipeline("gan_pretrain_2d", ds, corpus, tmp_path / "g")
    assert len(slices) > 0
    (split,) = _run_pipeline("wgan_pairs_2d", ds, corpus, tmp_path / "w")
    assert len(split.train) > 0 and len(split.val) > 0
    out = tmp_path / "synth ü"
    rc, lines, _ = _cli(_synth_argv(ds, corpus, out), capsys)
    assert rc == 0 and not lines, lines
    from monai.data import load_decathlon_datalist

    written = load_decathlon_datalist(str(out / "datalist.json"))
    assert len(written) == 1 and Path(written[0]["image"]).is_file() and Path(written[0]["label"]).is_file()
    assert written[0]["image"].endswith("_synth.nii.gz")


def test_relative_datalist_path_from_the_working_directory(corpus, capsys, monkeypatch):
    """A datalist given by a relative path on the command line: its entries resolve against its folder."""
    monkeypatch.chdir(corpus["root"])
    rc, lines, stdout = _cli(["check-data", "relative/datalist.json", "--label-values", *LABELS], capsys)
    assert rc == 0 and not lines and "1 valid" in stdout
    folder = corpus["cases"]["datalist entry with a missing file"][0].name
    rc, lines, _ = _cli(["check-data", f"{folder}/datalist.json"], capsys)
    assert rc == 2 and lines == [f"volgan: error: {Path(folder, 'c0_label.nii.gz')}: does not exist "
                                 f"(entry 0 'label' of {Path(folder, 'datalist.json')})"]


def test_synthesize_runs_with_its_default_device(corpus, capsys, tmp_path):
    """``volgan synthesize`` without ``--device`` (default ``auto``: CUDA when there is one, else the CPU) runs."""
    argv = _synth_argv(corpus["good"]["unicode folder"], corpus, tmp_path / "out")
    i = argv.index("--device")
    del argv[i:i + 2]
    rc, lines, _ = _cli(argv, capsys)
    assert rc == 0 and not lines, lines
    assert len(list((tmp_path / "out").glob("*_synth.nii.gz"))) == 1


def test_synthesis_never_overwrites_silently(corpus, capsys, tmp_path):
    """A synthesis run into a non-empty output folder refuses (exit 2, nothing touched) unless --overwrite."""
    ds = corpus["good"]["unicode folder"]
    out = tmp_path / "synth"
    out.mkdir()
    (out / "keep.txt").write_text("mine", encoding="utf-8")
    rc, lines, _ = _cli(_synth_argv(ds, corpus, out), capsys)
    assert rc == 2 and len(lines) == 1 and lines[0] == (f"volgan: error: output_dir {out} is not empty; "
                                                        "pass --overwrite true to write into it")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    rc, lines, _ = _cli(_synth_argv(ds, corpus, out, "--overwrite"), capsys)
    assert rc == 0 and not lines
    assert (out / "keep.txt").read_text(encoding="utf-8") == "mine"
    assert (out / "datalist.json").is_file() and len(list(out.glob("*_synth.nii.gz"))) == 1
    # an output path that is a file is a config error, and the file stays as it was
    f = tmp_path / "a_file"
    f.write_text("x", encoding="utf-8")
    rc, lines, _ = _cli(_synth_argv(ds, corpus, f), capsys)
    assert rc == 2 and lines == [f"volgan: error: output_dir {f} exists and is not a folder"]
    assert f.read_text(encoding="utf-8") == "x"


def test_duplicate_output_names_are_refused_before_anything_runs(corpus, capsys, tmp_path):
    """Two inputs from different folders with one file name would overwrite each other's output: refused upfront."""
    d = tmp_path / "two"
    for sub in ("x", "y"):
        (d / sub).mkdir(parents=True)
        write_pair(d / sub, "c0", *tiny_case(np.random.RandomState(7), (16, 16, 16)), affine=AFF)
    dl = _datalist(d, [{"label": "x/c0_label.nii.gz"}, {"label": "y/c0_label.nii.gz"}])
    out = tmp_path / "out"
    rc, lines, _ = _cli(_synth_argv(dl, corpus, out), capsys)
    assert rc == 2
    _assert_one_line(lines, d / "y" / "c0_label.nii.gz", r"its output would be named like that of .*x/c0_label.nii.gz")
    _nothing_written(out)


def test_failure_during_synthesis_leaves_no_partial_output(corpus, capsys, tmp_path, monkeypatch):
    """A failure after the first case was written (here: the writer fails on the second case) removes the staged
    files: the output folder holds nothing, not one of two cases."""
    from volgan.synthesis.writer import SynthesisWriter

    d = tmp_path / "two"
    d.mkdir()
    for case in ("c0", "c1"):
        write_pair(d, case, *tiny_case(np.random.RandomState(7), (16, 16, 16)), affine=AFF)
    dl = _datalist(d, [{"label": "c0_label.nii.gz"}, {"label": "c1_label.nii.gz"}])
    real_write, calls = SynthesisWriter._write, []

    def failing_write(self, engine):
        calls.append(engine.state.iteration)
        if len(calls) == 2:
            raise VolganDataError(d / "c1_label.nii.gz", "disk full (simulated)")
        real_write(self, engine)

    monkeypatch.setattr(SynthesisWriter, "_write", failing_write)
    out = tmp_path / "out"
    rc, lines, _ = _cli(_synth_argv(dl, corpus, out), capsys)
    assert rc == 2 and len(calls) == 2
    _assert_one_line(lines, d / "c1_label.nii.gz", r"^disk full \(simulated\)$")
    _nothing_written(out)


def test_full_disk_at_the_datalist_write_leaves_no_partial_output(corpus, capsys, tmp_path, monkeypatch):
    """The datalist is the last file written: a disk that fills there leaves no volumes without a datalist."""
    import errno

    import volgan.data.datalist as datalist_module

    def full_disk(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(datalist_module, "atomic_write_json", full_disk)
    out = tmp_path / "out"
    rc, lines, _ = _cli(_synth_argv(corpus["good"]["unicode folder"], corpus, out), capsys)
    assert rc == 1 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert lines[0].startswith("volgan: error: ") and "Traceback" not in lines[0]
    _nothing_written(out)


def test_bad_checkpoint(corpus, capsys, tmp_path):
    ds = corpus["good"]["unicode folder"]
    bad = tmp_path / "model.pt"  # an interrupted copy: half of a real checkpoint
    data = corpus["ckpt"].read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.pt"  # not a zip at all (pickle protocol bytes + junk)
    garbage.write_bytes(b"\x80\x04junk" * 10)
    for ckpt, problem in ((tmp_path / "none.pt", r"^checkpoint file does not exist$"),
                          (bad, r"^not a PyTorch checkpoint \(not a torch.save zip archive"),
                          (garbage, r"^not a PyTorch checkpoint \(not a torch.save zip archive")):
        argv = _synth_argv(ds, corpus, tmp_path / "out")
        argv[argv.index("--ckpt-path") + 1] = ckpt
        rc, lines, _ = _cli(argv, capsys)
        assert rc == 2
        _assert_one_line(lines, ckpt, problem)
        _nothing_written(tmp_path / "out")


def test_channel_first_label_maps_have_one_channel():
    """The dictionary validators (after LoadImaged with ensure_channel_first) reject multi-channel label maps."""
    from monai.data import MetaTensor

    from volgan.data import ValidateLabelMapd, ValidateVolumed

    lab = MetaTensor(torch.ones(2, 8, 8, 8), meta={"filename_or_obj": "/data/two_channel_label.nii.gz"})
    img = MetaTensor(torch.zeros(1, 8, 8, 8), meta={"filename_or_obj": "/data/image.nii.gz"})
    for xf, data in ((ValidateLabelMapd("label"), {"label": lab}),
                     (ValidateVolumed("image"), {"image": img, "label": lab})):
        with pytest.raises(VolganDataError, match=r"two_channel_label.nii.gz: a label map has one channel, got 2"):
            xf(data)


def test_real_command_line(corpus, tmp_path):
    """The real processes (``python -m volgan``, two at once to keep this quick): exit status 2, exactly one
    line on stderr, no traceback, nothing written. check-data runs on a relative unicode path with an ASCII-only
    console: the path is printed escaped, not a UnicodeEncodeError."""
    nan = Path("nän 数据")
    shutil.copytree(corpus["cases"]["NaN voxels"][0], tmp_path / nan)
    lab_folder, _ = corpus["cases"]["label values outside the configured set"]
    out = tmp_path / "synth"
    runs = {  # name: (argv, console encoding, file named, problem)
        "check-data": (["check-data", nan], "ascii", nan / "c0_image.nii.gz", r"^contains 1 NaN and 0 Inf voxels$"),
        "synthesize": (_synth_argv(lab_folder, corpus, out), "utf-8", lab_folder / "c0_label.nii.gz",
                       r"^label values \[7\] not in the configured set \[0, 1, 2, 3, 4\]$"),
    }
    procs = {k: subprocess.Popen([sys.executable, "-m", "volgan", *map(str, argv)], cwd=str(tmp_path),
                                 env={**os.environ, "PYTHONIOENCODING": enc}, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, encoding="utf-8")
             for k, (argv, enc, _, _) in runs.items()}
    for k, p in procs.items():
        _, stderr = p.communicate(timeout=300)
        _, enc, path, problem = runs[k]
        assert p.returncode == 2, (k, stderr)
        shown = Path(str(path).encode(enc, "backslashreplace").decode(enc))
        _assert_one_line([ln for ln in stderr.splitlines() if ln.strip()], shown, problem)
    _nothing_written(out)
