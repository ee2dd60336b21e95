"""Datalists, pairing by name, and every bad-input case -> one VolganDataError naming the file."""

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import tiny_case, write_pair
from volgan.data import find_pairs, list_inputs, load_datalist, validate_datalist, write_datalist
from volgan.errors import VolganDataError

LABELS = [0, 1, 2, 3, 4]


def _case(seed=0, shape=(16, 16, 16)):
    return tiny_case(np.random.RandomState(seed), shape)


def test_find_pairs_by_suffix_and_nnunet_layout(tmp_path):
    img, lab = _case()
    write_pair(tmp_path, "b", img, lab, img_name="b_t1.nii.gz", lab_name="b_seg.nii.gz")
    write_pair(tmp_path, "a", img, lab)
    pairs = find_pairs(tmp_path)
    assert [Path(p["image"]).name for p in pairs] == ["a_image.nii.gz", "b_t1.nii.gz"]
    assert [Path(p["label"]).name for p in pairs] == ["a_label.nii.gz", "b_seg.nii.gz"]
    nn = tmp_path / "nn"
    (nn / "imagesTr").mkdir(parents=True)
    (nn / "labelsTr").mkdir()
    write_pair(nn, "x", img, lab, img_name="imagesTr/x_0000.nii.gz", lab_name="labelsTr/x.nii.gz")
    assert Path(find_pairs(nn)[0]["label"]).name == "x.nii.gz"


def test_datalist_relative_unicode_and_spaces(tmp_path):
    folder = tmp_path / "dätä with spaces"
    folder.mkdir()
    img, lab = _case()
    write_pair(folder, "é case", img, lab)
    dl = folder / "list.json"
    dl.write_text(json.dumps({"training": [{"image": "é case_image.nii.gz", "label": "é case_label.nii.gz"}]}), encoding="utf-8")
    items = load_datalist(dl)
    assert Path(items[0]["image"]).is_absolute() and Path(items[0]["image"]).exists()
    validate_datalist(items, label_values=LABELS)
    # write_datalist writes relative paths that MONAI's reader resolves
    from monai.data import load_decathlon_datalist

    out = write_datalist(tmp_path / "sub" / "dl.json", items)
    assert not Path(json.loads(out.read_text(encoding="utf-8"))["training"][0]["image"]).is_absolute()
    assert Path(load_decathlon_datalist(str(out))[0]["image"]).resolve() == Path(items[0]["image"]).resolve()


def _expect(match: str, path_part: str, fn, *a, **k):
    with pytest.raises(VolganDataError, match=match) as e:
        fn(*a, **k)
    assert path_part in str(e.value), str(e.value)
    assert "\n" not in str(e.value)
    return e.value


@pytest.fixture
def good(tmp_path):
    img, lab = _case()
    return tmp_path, write_pair(tmp_path, "good", img, lab)


def test_bad_datalists(tmp_path, good):
    folder, item = good
    bad_json = folder / "bad.json"
    bad_json.write_text('{"training": [ {"image": ', encoding="utf-8")
    _expect("not valid JSON", "bad.json", load_datalist, bad_json)
    missing = folder / "missing.json"
    missing.write_text(json.dumps({"training": [{"image": "nope_image.nii.gz", "label": item["label"]}]}), encoding="utf-8")
    _expect("does not exist", "nope_image.nii.gz", load_datalist, missing)
    nolabel = folder / "nolabel.json"
    nolabel.write_text(json.dumps({"training": [{"image": item["image"]}]}), encoding="utf-8")
    _expect("has no 'label'", "nolabel.json", load_datalist, nolabel)
    _expect("datalist does not exist", "absent.json", load_datalist, folder / "absent.json")
    unpaired = tmp_path / "unpaired"
    unpaired.mkdir()
    img, lab = _case()
    write_pair(unpaired, "c1", img, lab)
    (unpaired / "c1_label.nii.gz").rename(unpaired / "c2_label.nii.gz")
    _expect("without", "unpaired", find_pairs, unpaired)


BAD_CASES = {}


def _bad(name):
    def deco(fn):
        BAD_CASES[name] = fn
        return fn
    return deco


@_bad("truncated nifti")
def _truncated(folder, item):
    data = Path(item["image"]).read_bytes()
    Path(item["image"]).write_bytes(data[: len(data) // 2])
    return item, "unreadable or corrupt", "good_image.nii.gz"


@_bad("corrupt nifti")
def _corrupt(folder, item):
    Path(item["label"]).write_bytes(gzip.compress(b"this is not a nifti header" * 20))
    return item, "unreadable or corrupt", "good_label.nii.gz"


@_bad("zero-byte file")
def _zero(folder, item):
    Path(item["image"]).write_bytes(b"")
    return item, "empty file", "good_image.nii.gz"


@_bad("wrong extension")
def _ext(folder, item):
    p = Path(item["image"]).with_suffix(".txt")
    Path(item["image"]).rename(p)
    return {**item, "image": str(p)}, "unsupported file type", ".txt"


@_bad("2D where 3D expected")
def _twod(folder, item):
    nib.save(nib.Nifti1Image(np.ones((16, 16), np.float32), np.eye(4)), item["image"])
    return item, "expected a 3D volume", "good_image.nii.gz"


@_bad("4D with several channels")
def _fourd(folder, item):
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16, 3), np.float32), np.diag([2, 2, 2, 1.0])), item["image"])
    return item, "4D", "good_image.nii.gz"


@_bad("shape mismatch")
def _shape(folder, item):
    img, _ = _case(shape=(16, 16, 18))
    nib.save(nib.Nifti1Image(img.astype(np.float32), np.diag([2, 2, 2, 1.0])), item["image"])
    return item, "does not match image", "good_label.nii.gz"


@_bad("affine mismatch")
def _affine(folder, item):
    lab = np.asarray(nib.load(item["label"]).dataobj)
    nib.save(nib.Nifti1Image(lab, np.diag([3, 2, 2, 1.0])), item["label"])
    return item, "affine differs", "good_label.nii.gz"


@_bad("NaN voxels")
def _nan(folder, item):
    img = np.asarray(nib.load(item["image"]).dataobj).copy()
    img[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(img, np.diag([2, 2, 2, 1.0])), item["image"])
    return item, "1 NaN", "good_image.nii.gz"


@_bad("Inf voxels")
def _inf(folder, item):
    img = np.asarray(nib.load(item["image"]).dataobj).copy()
    img[3, 3, 3] = np.inf
    img[4, 4, 4] = -np.inf
    nib.save(nib.Nifti1Image(img, np.diag([2, 2, 2, 1.0])), item["image"])
    return item, "2 Inf", "good_image.nii.gz"


@_bad("empty label map")
def _empty(folder, item):
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.uint8), np.diag([2, 2, 2, 1.0])), item["label"])
    return item, "empty label map", "good_label.nii.gz"


@_bad("label values outside the set")
def _values(folder, item):
    lab = np.asarray(nib.load(item["label"]).dataobj).copy()
    lab[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(lab, np.diag([2, 2, 2, 1.0])), item["label"])
    return item, r"label values \[7\]", "good_label.nii.gz"


@_bad("missing file")
def _missing(folder, item):
    Path(item["label"]).unlink()
    return item, "does not exist", "good_label.nii.gz"


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_gives_one_clear_error(case, good):
    folder, item = good
    bad_item, match, path_part = BAD_CASES[case](folder, item)
    _expect(match, path_part, validate_datalist, [bad_item], label_values=LABELS)


def test_list_inputs(tmp_path, good):
    folder, item = good
    assert list_inputs(item["label"]) == [item["label"]]
    assert list_inputs(folder) == [item["label"]]  # a folder of pairs gives its label maps
    assert list_inputs([{"label": item["label"]}]) == [item["label"]]
    _expect("input does not exist", "nothing", list_inputs, folder / "nothing")
