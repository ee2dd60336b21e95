"""nnU-Net export: real + synthetic (image, label) pairs written as an nnU-Net v2 raw dataset.

``export_nnunet`` writes ``<out_dir>/DatasetXXX_Name/`` with ``dataset.json``, ``imagesTr/<case>_0000.nii.gz``
(one file per channel), ``labelsTr/<case>.nii.gz``, optionally ``imagesTs/`` (+ ``labelsTs/``), and
``splits_final.json`` (cross-validation folds that validate on real cases only). Real cases are named
``real_<case>``, synthetic ones ``syn_<case>``. The result passes ``nnUNetv2_plan_and_preprocess
--verify_dataset_integrity``; see ``docs/nnunet.md``.

Inputs are read and checked with volgan's own ``load_datalist`` / ``validate_datalist`` before anything is
written; the dataset is built in a staging folder beside it and renamed into place, so an error leaves nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from volgan.data.datalist import IMAGE_TAGS, file_stem, load_datalist, read_json, split_tag
from volgan.data.validate import load_volume, validate_datalist
from volgan.errors import VolganConfigError, VolganDataError
from volgan.io import atomic_write_json, prepare_output_dir
from volgan.version import __version__

__all__ = ["export_nnunet", "parse_labels", "nnunet_dataset_name"]

REAL_PREFIX, SYNTHETIC_PREFIX = "real_", "syn_"
FILE_ENDINGS = (".nii.gz", ".nii")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def nnunet_dataset_name(dataset_id: Any, name: str) -> str:
    """``Dataset{id:03d}_{name}``: ``dataset_id`` in 1..999, ``name`` of letters, digits, ``_`` and ``-``."""
    try:
        did = int(dataset_id)
    except (TypeError, ValueError):
        raise VolganConfigError(f"dataset_id must be an integer in 1..999, got {dataset_id!r}") from None
    if isinstance(dataset_id, float) and dataset_id != did or not 1 <= did <= 999:
        raise VolganConfigError(f"dataset_id must be an integer in 1..999 (nnU-Net's three digits), got {dataset_id!r}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise VolganConfigError(f"dataset name must be letters, digits, '_' or '-' (no spaces), got {name!r}")
    return f"Dataset{did:03d}_{name}"


def parse_labels(spec: Any) -> dict[str, int] | None:
    """Label names and the values they have in the input label maps, as ``{name: value}``.

    Accepts ``{name: value}`` (nnU-Net style), ``{"value": name}`` (decathlon style, e.g. volgan's sample
    ``dataset.json``), a list of ``"name=value"`` strings (the CLI), or a list of names (values 0, 1, 2, ...).
    ``None`` stays ``None`` (names are then made up from the values found). Value 0 is always named
    ``background`` (nnU-Net requires it); a missing 0 is added.
    """
    if spec is None:
        return None
    pairs: list[tuple[str, Any]]
    if isinstance(spec, Mapping):
        items = list(spec.items())
        if items and all(_is_int(k) and isinstance(v, str) for k, v in items):  # decathlon {"0": "background"}
            pairs = [(v, k) for k, v in items]
        else:
            pairs = [(str(k), v) for k, v in items]
    elif isinstance(spec, (list, tuple)) and all(isinstance(s, str) for s in spec):
        with_value = [("=" in s) for s in spec]
        if all(with_value):
            pairs = [tuple(s.split("=", 1)) for s in spec]  # type: ignore[misc]
        elif not any(with_value):
            pairs = [(s, i) for i, s in enumerate(spec)]
        else:
            raise VolganConfigError(f"labels: give every label as NAME=VALUE or none of them (names only), got {spec}")
    else:
        raise VolganConfigError(f"labels must be a mapping or a list of names / NAME=VALUE strings, got {spec!r}")
    out: dict[str, int] = {}
    for name, value in pairs:
        name = str(name).strip()
        if not _is_int(value) or int(value) < 0:
            raise VolganConfigError(f"labels: value of {name!r} must be an integer >= 0, got {value!r}")
        value = int(value)
        if not name:
            raise VolganConfigError(f"labels: value {value} has an empty name")
        if value == 0:
            name = "background"
        elif name == "background":
            raise VolganConfigError(f"labels: 'background' must be value 0, got {value}")
        if name in out and out[name] != value:
            raise VolganConfigError(f"labels: name {name!r} is given twice (values {out[name]} and {value})")
        if value in out.values() and out.get(name) != value:
            raise VolganConfigError(f"labels: value {value} is given two names")
        out[name] = value
    out.setdefault("background", 0)
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def _is_int(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (int, np.integer)):
        return True
    if isinstance(v, float):
        return v.is_integer()
    return isinstance(v, str) and re.fullmatch(r"\s*\d+\s*", v) is not None


def _resolve_source(source: Any) -> Any:
    """A folder written by ``volgan synthesize`` holds ``datalist.json`` (not ``dataset.json``): use it."""
    if isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir() and not (p / "dataset.json").is_file() and (p / "datalist.json").is_file():
            return p / "datalist.json"
    return source


def _metadata(source: Any) -> dict[str, Any]:
    """Top-level keys (``labels``, ``modality``/``channel_names``) of a decathlon JSON datalist; ``{}`` otherwise."""

    if not isinstance(source, (str, os.PathLike)):
        return {}
    p = Path(source)
    if p.is_dir():
        p = p / "dataset.json"
    if not (p.is_file() and p.suffix.lower() == ".json"):
        return {}
    data = read_json(p)
    return data if isinstance(data, dict) else {}


def _channel_names(spec: Any, n: int | None) -> dict[str, str]:
    if spec is None:
        n = n or 1
        return {"0": "image"} if n == 1 else {str(i): f"image_{i}" for i in range(n)}
    if isinstance(spec, Mapping):
        names = [str(spec[k]) for k in sorted(spec, key=lambda k: int(k) if _is_int(k) else 0)]
        if sorted(int(k) for k in spec if _is_int(k)) != list(range(len(spec))):
            raise VolganConfigError(f"channel_names keys must be 0, 1, 2, ..., got {list(spec)}")
    elif isinstance(spec, str):
        names = [spec]
    else:
        names = [str(s) for s in spec]
    if not names or any(not s.strip() for s in names):
        raise VolganConfigError(f"channel_names must be non-empty names, got {spec!r}")
    if n is not None and len(names) != n:
        raise VolganConfigError(f"{len(names)} channel name(s) {names} for images with {n} channel(s)")
    return {str(i): s for i, s in enumerate(names)}


def _num_channels(shape: Sequence[int], spatial_dims: int) -> int:
    return int(shape[-1]) if len(shape) == spatial_dims + 1 else 1


def _case_stem(item: Mapping[str, Any]) -> str:
    """The case's name: a ``case`` entry, else the image file's stem without its image tag (``_image``, ``_t1``),
    synthesis tag (``_synth``) or nnU-Net channel suffix (``_0000``); characters other than letters, digits,
    ``_`` and ``-`` become ``_``."""
    base = item.get("case")
    if not (isinstance(base, str) and base.strip()):
        stem = re.sub(r"_\d{4}$", "", file_stem(Path(str(item["image"]))))
        stem = re.sub(r"[_\-.](synth|syn|fake)$", "", stem, flags=re.IGNORECASE)
        base = split_tag(stem, IMAGE_TAGS) or stem
    return re.sub(r"[^A-Za-z0-9_-]+", "_", base).strip("_") or "case"


def _case_names(items: Sequence[Mapping[str, Any]], prefix: str) -> list[str]:
    names, taken = [], set()
    for it in items:
        base = prefix + _case_stem(it)
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        names.append(name)
    return names


def _label_array(path: str, spatial_dims: int) -> np.ndarray:
    lab = np.asarray(load_volume(path))
    if lab.ndim == spatial_dims + 1 and lab.shape[-1] == 1:
        lab = lab[..., 0]
    return np.rint(lab).astype(np.int64)


def _label_values(items: Sequence[Mapping[str, Any]], spatial_dims: int) -> set[int]:
    values: set[int] = set()
    for it in items:
        found = {int(v) for v in np.unique(_label_array(it["label"], spatial_dims))}
        negative = sorted(v for v in found if v < 0)
        if negative:
            raise VolganDataError(it["label"], f"negative label values {negative} (nnU-Net needs 0, 1, 2, ...)")
        values |= found
    return values


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(path))


def _write_case(item: Mapping[str, Any], case: str, images_dir: Path, labels_dir: Path | None,
                mapping: Mapping[int, int], spatial_dims: int, file_ending: str) -> None:
    img = load_volume(item["image"])
    arr = np.asarray(img)
    affine = img.affine.detach().cpu().numpy().astype(np.float64)
    channels = [arr] if arr.ndim == spatial_dims else [arr[..., c] for c in range(arr.shape[-1])]
    for c, ch in enumerate(channels):
        _save(np.ascontiguousarray(ch), affine, images_dir / f"{case}_{c:04d}{file_ending}")
    if labels_dir is None or "label" not in item:
        return
    lab = _label_array(item["label"], spatial_dims)
    out = np.zeros(lab.shape, dtype=np.uint8 if len(mapping) <= 256 else np.uint16)
    seen = np.zeros(lab.shape, dtype=bool)
    for value, new in mapping.items():
        sel = lab == value
        out[sel], seen[sel] = new, True
    if not seen.all():
        bad = sorted(int(v) for v in np.unique(lab[~seen]))
        raise VolganDataError(item["label"], f"label values {bad} not in the labels {sorted(mapping)}")
    # written on the image's grid: validate_datalist has checked that the label's affine agrees with it
    _save(out, affine, labels_dir / f"{case}{file_ending}")


def _splits(real: Sequence[str], synthetic: Sequence[str], made_from: Mapping[str, str], folds: int = 5,
            seed: int = 12345) -> list[dict[str, list[str]]]:
    """nnU-Net ``splits_final.json``: ``folds`` folds over the real cases; every fold trains on the other real
    cases and the synthetic ones, except synthetic cases made from one of the fold's validation cases."""
    k = min(folds, len(real))
    if k < 2:
        return []
    order = [real[i] for i in np.random.RandomState(seed).permutation(len(real))]
    fold_of = {c: i % k for i, c in enumerate(order)}
    out = []
    for f in range(k):
        val = sorted(c for c in real if fold_of[c] == f)
        held = set(val)
        train = sorted(c for c in real if fold_of[c] != f)
        train += sorted(s for s in synthetic if made_from.get(s) not in held)
        out.append({"train": train, "val": val})
    return out


def _staged_commit(stage: Path, target: Path) -> None:
    """Rename the finished ``stage`` to ``target``, moving an existing ``target`` aside first (then deleting it)."""
    old = None
    if target.exists():
        old = target.with_name(f".old-{target.name}-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    try:
        os.replace(stage, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_nnunet(
    real: Any,
    out_dir: str | os.PathLike,
    dataset_id: int,
    name: str,
    synthetic: Any = None,
    labels: Any = None,
    channel_names: Any = None,
    test: Any = None,
    overwrite: bool = False,
    file_ending: str = ".nii.gz",
    spatial_dims: int = 3,
    require_foreground: bool = False,
    splits: bool = True,
) -> Path:
    """Write real (+ synthetic) (image, label) pairs as the nnU-Net v2 raw dataset ``out_dir/DatasetXXX_Name``.

    Args:
        real: real pairs: a datalist JSON, a folder (``<case>_image`` + ``<case>_label`` files,
            ``imagesTr``/``labelsTr``, or ``dataset.json``) or an in-memory list (see ``load_datalist``).
        out_dir: the ``nnUNet_raw`` folder; the dataset becomes its subfolder ``DatasetXXX_Name``.
        dataset_id: nnU-Net's dataset id, 1..999. Another ``DatasetXXX_*`` folder with the id is an error.
        name: dataset name (letters, digits, ``_``, ``-``).
        synthetic: synthetic pairs, e.g. the output folder of ``volgan synthesize`` (its ``datalist.json``), or
            anything ``real`` accepts. ``None``: real cases only.
        labels: label names and their values in the input label maps (see ``parse_labels``); default: the
            ``labels`` of ``real``'s decathlon JSON if it has them, else the values found (named ``label_<v>``).
            Values outside ``labels`` are an error naming the file.
        channel_names: one name per image channel (nnU-Net picks the normalisation from it: ``CT`` gives CT
            normalisation, anything else z-score); default: ``modality`` / ``channel_names`` of ``real``'s JSON,
            else ``image``. 4D images (channels on the last axis) are split into ``_0000``, ``_0001``, ...
        test: held-out cases written to ``imagesTs`` (and ``labelsTs`` when they have labels); prefix ``real_``.
        overwrite: replace an existing, non-empty dataset folder (as a whole).
        file_ending: ``.nii.gz`` or ``.nii``.
        spatial_dims: 3 (volumes) or 2 (2D images).
        require_foreground: reject label maps with background only (nnU-Net accepts them: default ``False``).
        splits: write ``splits_final.json`` (at least 2 real cases): up to 5 folds that validate on real cases
            only and never train on a synthetic case made from (``source`` in the synthetic datalist) one of
            the fold's validation cases. ``nnUNetv2_plan_and_preprocess`` copies it to ``$nnUNet_preprocessed``.

    nnU-Net needs consecutive label values 0, 1, 2, ...: other values (e.g. BraTS 0, 1, 2, 4) are mapped to
    consecutive ones in sorted order (4 -> 3) and the mapping is recorded in ``dataset.json["volgan"]
    ["label_mapping"]`` (input value -> nnU-Net value), with each case's source files under ``["cases"]``.
    Images are written as float32 on their own grid (array and affine unchanged); labels as uint8 on the image's
    grid. Every input is validated (``validate_datalist``) before anything is written; the dataset is built in a
    staging folder in ``out_dir`` and renamed into place, so an error leaves no partial dataset.

    Returns:
        the dataset folder.
    """
    dataset_name = nnunet_dataset_name(dataset_id, name)
    if file_ending not in FILE_ENDINGS:
        raise VolganConfigError(f"file_ending must be one of {FILE_ENDINGS}, got {file_ending!r}")
    if spatial_dims not in (2, 3):
        raise VolganConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise VolganConfigError(f"output_dir {root} exists and is not a folder")
    target = root / dataset_name
    if root.is_dir():
        prefix = dataset_name[: len("Dataset000")]  # nnU-Net finds datasets by this prefix
        clash = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix) and p != target)
        if clash:
            raise VolganConfigError(f"output_dir {root} already holds {clash[0]} with dataset id {int(dataset_id)}: "
                                    "nnU-Net needs one dataset per id (choose another id or remove it)")
    if target.exists():
        prepare_output_dir(target, overwrite)  # refuses a non-empty dataset folder unless overwrite

    real_src, syn_src, test_src = _resolve_source(real), _resolve_source(synthetic), _resolve_source(test)
    meta = _metadata(real_src)
    real_items = load_datalist(real_src)
    syn_items = load_datalist(syn_src) if syn_src is not None else []
    test_items = load_datalist(test_src, keys=("image",)) if test_src is not None else []
    test_labelled = bool(test_items) and all("label" in it for it in test_items)

    declared = parse_labels(labels if labels is not None else meta.get("labels"))
    names_spec = channel_names if channel_names is not None else meta.get("channel_names", meta.get("modality"))
    if names_spec is not None:
        n_channels = len(_channel_names(names_spec, None))
    else:
        n_channels = _num_channels(tuple(load_volume(real_items[0]["image"]).shape), spatial_dims)
    chan = _channel_names(names_spec, n_channels)

    check = dict(spatial_dims=spatial_dims, label_values=None if declared is None else sorted(declared.values()),
                 image_channels=n_channels if n_channels > 1 else None)
    validate_datalist(real_items, require_foreground=require_foreground, **check)
    validate_datalist(syn_items, require_foreground=require_foreground, **check)
    validate_datalist(test_items, label_key="label" if test_labelled else None, require_foreground=False, **check)

    with_labels = real_items + syn_items + (test_items if test_labelled else [])
    if declared is None:
        found = _label_values(with_labels, spatial_dims) | {0}
        declared = {("background" if v == 0 else f"label_{v}"): v for v in sorted(found)}
    values = sorted(declared.values())
    mapping = {v: i for i, v in enumerate(values)}
    nn_labels = {n: mapping[v] for n, v in declared.items()}
    if "ignore" in nn_labels and nn_labels["ignore"] != max(nn_labels.values()):
        raise VolganConfigError(f"label 'ignore' must have the highest value for nnU-Net, got {declared}")

    real_cases = _case_names(real_items, REAL_PREFIX)
    syn_cases = _case_names(syn_items, SYNTHETIC_PREFIX)
    test_cases = _case_names(test_items, REAL_PREFIX)
    by_path: dict[str, str] = {}
    for case, it in zip(real_cases, real_items):
        for k in ("image", "label"):
            by_path[os.path.realpath(it[k])] = case
    made_from = {case: by_path[os.path.realpath(str(it["source"]))] for case, it in zip(syn_cases, syn_items)
                 if isinstance(it.get("source"), str) and os.path.realpath(it["source"]) in by_path}

    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".staging-{dataset_name}-", dir=str(root)))
    try:
        dirs = {k: stage / k for k in ("imagesTr", "labelsTr")}
        if test_items:
            dirs["imagesTs"] = stage / "imagesTs"
            if test_labelled:
                dirs["labelsTs"] = stage / "labelsTs"
        for d in dirs.values():
            d.mkdir()
        cases: dict[str, dict[str, Any]] = {}
        for kind, items, names in (("real", real_items, real_cases), ("synthetic", syn_items, syn_cases)):
            for case, it in zip(names, items):
                _write_case(it, case, dirs["imagesTr"], dirs["labelsTr"], mapping, spatial_dims, file_ending)
                cases[case] = {"kind": kind, **{k: os.path.abspath(it[k]) for k in ("image", "label")},
                               **({"made_from": made_from[case]} if case in made_from else {})}
        for case, it in zip(test_cases, test_items):
            _write_case(it, case, dirs["imagesTs"], dirs.get("labelsTs"), mapping, spatial_dims, file_ending)
        atomic_write_json(stage / "dataset.json", {
            "channel_names": chan,
            "labels": nn_labels,
            "numTraining": len(real_items) + len(syn_items),
            "file_ending": file_ending,
            "name": name,
            "description": f"volgan export: {len(real_items)} real (prefix {REAL_PREFIX}) + {len(syn_items)} "
                           f"synthetic (prefix {SYNTHETIC_PREFIX}) training cases",
            "volgan": {
                "version": __version__,
                "label_mapping": {str(v): i for v, i in mapping.items()},
                "num_real": len(real_items),
                "num_synthetic": len(syn_items),
                "num_test": len(test_items),
                "case_prefixes": {"real": REAL_PREFIX, "synthetic": SYNTHETIC_PREFIX},
                "cases": cases,
            },
        })
        folds = _splits(real_cases, syn_cases, made_from) if splits else []
        if folds:
            atomic_write_json(stage / "splits_final.json", folds)
        _staged_commit(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return target
