"""Datalists: read, write and check decathlon-format JSON, or pair image/label files in a folder by name."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from volgan.errors import VolganDataError
from volgan.io import atomic_write_json

__all__ = [
    "VOLUME_SUFFIXES",
    "IMAGE_TAGS",
    "LABEL_TAGS",
    "volume_suffix",
    "is_volume_file",
    "is_dicom_dir",
    "file_stem",
    "split_tag",
    "case_name",
    "read_json",
    "load_datalist",
    "find_pairs",
    "list_inputs",
    "write_datalist",
]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".tif", ".tiff")
LABEL_TAGS = ("label", "labels", "seg", "mask", "gt")
IMAGE_TAGS = ("image", "img", "t1", "t1ce", "t2", "flair", "ct", "mr", "mri", "vol", "volume")


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The medical-image suffix of ``path`` (``.nii.gz``, ``.nrrd``, ...), or ``None``."""
    name = str(path).lower()
    for s in VOLUME_SUFFIXES:
        if name.endswith(s):
            return s
    return None


def is_volume_file(path: str | os.PathLike) -> bool:
    """A file with a medical-image suffix (NIfTI, NRRD, MetaImage, DICOM, PNG/TIFF)."""
    return os.path.isfile(path) and volume_suffix(path) is not None


def is_dicom_dir(path: Path) -> bool:
    """A folder holding a DICOM series (``*.dcm``, ``CT.*`` or ``MR.*`` files)."""
    return path.is_dir() and any(p.is_file() and (p.suffix.lower() == ".dcm" or p.name.startswith(("CT.", "MR."))) for p in path.iterdir())


def file_stem(path: str | os.PathLike) -> str:
    """File name without its medical-image suffix (``case1_image.nii.gz`` -> ``case1_image``)."""
    path = Path(path)
    s = volume_suffix(path) or path.suffix
    return path.name[: len(path.name) - len(s)] if s else path.name


def split_tag(stem: str, tags: Sequence[str]) -> str | None:
    """The case part of a tagged stem (``c1_t1`` with an image tag -> ``c1``), or ``None`` without such a tag."""
    m = re.match(rf"^(.*?)[_\-.]({'|'.join(tags)})$", stem, flags=re.IGNORECASE)
    return m.group(1) if m else None


def case_name(path: str | os.PathLike) -> str:
    """The case a file belongs to: its stem without an image or label tag (``c1_label.nii.gz`` -> ``c1``)."""
    stem = file_stem(path)
    return split_tag(stem, LABEL_TAGS + IMAGE_TAGS) or stem


def find_pairs(folder: str | os.PathLike) -> list[dict[str, str]]:
    """Pair image and label files of ``folder`` by name.

    Recognised layouts, in this order: ``dataset.json`` (decathlon) in the folder; ``imagesTr/`` +
    ``labelsTr/`` with the same file names (nnU-Net's ``_0000`` channel suffix is ignored); files named
    ``<case>_<tag>`` with an image tag (image, img, t1, t1ce, t2, flair, ct, mr, ...) and a label tag
    (label, seg, mask, gt). Raises ``VolganDataError`` for a folder without pairs or an unpaired file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise VolganDataError(folder, "is not a folder")
    if (folder / "dataset.json").is_file():
        return load_datalist(folder / "dataset.json")
    if (folder / "imagesTr").is_dir() and (folder / "labelsTr").is_dir():
        labels = {file_stem(p): p for p in sorted((folder / "labelsTr").iterdir()) if volume_suffix(p)}
        pairs = []
        for img in sorted((folder / "imagesTr").iterdir()):
            if not volume_suffix(img):
                continue
            case = re.sub(r"_\d{4}$", "", file_stem(img))
            if case not in labels:
                raise VolganDataError(img, f"no label file named {case}* in {folder / 'labelsTr'}")
            pairs.append({"image": str(img), "label": str(labels[case])})
        if not pairs:
            raise VolganDataError(folder, "imagesTr/ holds no image files")
        return pairs
    images: dict[str, Path] = {}
    labels: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not (volume_suffix(p) or is_dicom_dir(p)):
            continue
        stem = file_stem(p)
        case = split_tag(stem, LABEL_TAGS)
        found = labels if case is not None else images
        case = case if case is not None else (split_tag(stem, IMAGE_TAGS) or stem)
        if case in found:
            kind = "label maps" if found is labels else "images"
            raise VolganDataError(folder, f"two {kind} for case {case!r} ({found[case].name}, {p.name}): the "
                                  "pairing is ambiguous; give a datalist JSON")
        found[case] = p
    if not images and not labels:
        raise VolganDataError(folder, "holds no image/label files (expected <case>_image.nii.gz + <case>_label.nii.gz, "
                              "imagesTr/ + labelsTr/, or dataset.json)")
    for case, lab in labels.items():
        if case not in images:
            raise VolganDataError(lab, f"label without an image (no {case}_image.* or {case}_<modality>.* beside it)")
    for case, img in images.items():
        if case not in labels:
            raise VolganDataError(img, f"image without a label (no {case}_label.* or {case}_seg.* beside it)")
    return [{"image": str(images[c]), "label": str(labels[c])} for c in sorted(images)]


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file, or one ``VolganDataError`` naming it (missing, unreadable, invalid JSON with the position)."""
    path = Path(path)
    if not path.is_file():
        raise VolganDataError(path, "datalist does not exist")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except RecursionError:
        raise VolganDataError(path, "JSON nested too deeply to be a datalist") from None
    except json.JSONDecodeError as e:
        raise VolganDataError(path, f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
    except (UnicodeDecodeError, OSError) as e:
        raise VolganDataError(path, f"cannot read datalist ({e})") from e


def load_datalist(
    source: str | os.PathLike | Sequence[dict],
    key: str = "training",
    keys: Sequence[str] = ("image", "label"),
    check_exists: bool = True,
) -> list[dict[str, Any]]:
    """Read a datalist from a decathlon JSON, a JSON list, a folder of pairs, or an in-memory list.

    Relative paths in a JSON file resolve against the JSON's folder (decathlon convention). Every entry must
    have ``keys``; with ``check_exists`` every referenced file must exist. Errors name the datalist, the
    entry and the file.
    """
    if isinstance(source, (list, tuple)):
        items, base, origin = [dict(x) for x in source], None, "datalist"
    else:
        path = Path(source)
        if path.is_dir():
            items, base, origin = find_pairs(path), None, str(path)
        else:
            data = read_json(path)
            base, origin = path.parent, str(path)
            if isinstance(data, dict):
                if key not in data:
                    raise VolganDataError(path, f"has no {key!r} list (keys: {sorted(data)})")
                data = data[key]
            if not isinstance(data, list):
                raise VolganDataError(path, f"{key!r} must be a list of {{'image': ..., 'label': ...}} entries")
            items = data
    out = []
    for i, entry in enumerate(items):
        if not isinstance(entry, dict):
            raise VolganDataError(origin, f"entry {i} is not an object: {entry!r}")
        entry = dict(entry)
        for k in keys:
            if k not in entry:
                raise VolganDataError(origin, f"entry {i} has no {k!r}")
        for k in dict.fromkeys(tuple(keys) + ("image", "label")):
            if k not in entry:
                continue
            value = entry[k]
            if not isinstance(value, (str, os.PathLike)):
                raise VolganDataError(origin, f"entry {i}: {k!r} must be a path, got {value!r}")
            p = Path(value)
            if base is not None and not p.is_absolute():
                p = base / p
            if check_exists and not p.exists():
                what = "is a broken symbolic link" if p.is_symlink() else "does not exist"
                raise VolganDataError(p, f"{what} (entry {i} {k!r} of {origin})")
            entry[k] = str(p)
        out.append(entry)
    if not out:
        raise VolganDataError(origin, "datalist is empty")
    return out


def list_inputs(source: str | os.PathLike | Sequence, key: str = "label") -> list[str]:
    """Input files for inference: one file, every volume file in a folder, or ``key`` (else ``image``) of a datalist.

    A folder with ``dataset.json`` or image/label pairs gives its ``key`` files; a DICOM series folder is one input.
    """
    if isinstance(source, (list, tuple)):
        return [str(x[key] if isinstance(x, dict) and key in x else x["image"] if isinstance(x, dict) else x) for x in source]
    path = Path(source)
    if not path.exists():
        raise VolganDataError(path, "input does not exist")
    if path.is_file() and path.suffix.lower() == ".json":
        items = load_datalist(path, keys=())
        missing = [i for i, it in enumerate(items) if key not in it and "image" not in it]
        if missing:
            raise VolganDataError(path, f"entry {missing[0]} has neither {key!r} nor 'image'")
        return [str(Path(it[key] if key in it else it["image"])) for it in items]
    if path.is_file():
        if not volume_suffix(path):
            raise VolganDataError(path, f"unsupported file type (expected one of {', '.join(VOLUME_SUFFIXES)})")
        return [str(path)]
    if is_dicom_dir(path):
        return [str(path)]
    broken = [p for p in sorted(path.iterdir()) if p.is_symlink() and not p.exists()]
    if broken:
        raise VolganDataError(broken[0], "is a broken symbolic link (its target does not exist)")
    files = [p for p in sorted(path.iterdir()) if p.is_file() and volume_suffix(p)]
    if (path / "dataset.json").is_file():
        return [it[key] for it in load_datalist(path / "dataset.json", keys=(key,))]
    tagged = [p for p in files if split_tag(file_stem(p), LABEL_TAGS) is not None]
    if key == "label":
        chosen = tagged or files
    else:  # images: a folder of pairs gives its image files
        chosen = [p for p in files if p not in tagged]
    if not chosen:
        raise VolganDataError(path, "holds no volume files")
    return [str(p) for p in chosen]


def write_datalist(path: str | os.PathLike, items: Sequence[dict], key: str = "training", **extra: Any) -> Path:
    """Write a decathlon datalist with paths relative to the JSON's folder (atomically)."""
    path = Path(path)
    base = path.parent.resolve()
    rel = []
    for it in items:
        e = dict(it)
        for k in ("image", "label"):
            if k in e:
                p = Path(e[k]).resolve()
                try:
                    e[k] = os.path.relpath(p, base)
                except ValueError:  # other drive (Windows)
                    e[k] = str(p)
        rel.append(e)
    return atomic_write_json(path, {**extra, key: rel})
