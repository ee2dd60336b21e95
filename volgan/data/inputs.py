"""The inputs of inference and synthesis: a file, a folder or a datalist resolved to items, every file checked before
anything is written (a bad input is one line naming it, and no partial output)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from volgan.data.datalist import case_name, file_stem, find_pairs, list_inputs, load_datalist
from volgan.data.validate import check_image, check_label, load_volume, validate_datalist
from volgan.errors import VolganDataError

__all__ = ["unique_outputs", "label_map_inputs", "image_inputs", "translation_inputs"]


def unique_outputs(files: Sequence[str], name: Any = case_name) -> None:
    """Refuse two inputs whose outputs would have one name (same file name in two folders): nothing is
    overwritten silently."""
    seen: dict[str, str] = {}
    for f in files:
        n = name(f)
        if n in seen:
            raise VolganDataError(f, f"its output would be named like that of {seen[n]} ({n!r}): rename one "
                                  "(inputs from several folders need distinct file names)")
        seen[n] = str(f)


def label_map_inputs(source: Any, label_values: Sequence[int] | None = None, spatial_dims: int = 3,
                     key: str = "label") -> list[dict[str, str]]:
    """Label maps to synthesise from (P1): ``[{"image": label_map_path}]``; every map checked first (unreadable,
    wrong dims, NaN, values outside ``label_values``, empty), and no two with one output name."""
    files = list_inputs(source, key=key)
    unique_outputs(files)
    for f in files:
        check_label(load_volume(f), f, label_values, spatial_dims)
    return [{"image": f} for f in files]


def image_inputs(source: Any, spatial_dims: int = 3) -> list[dict[str, str]]:
    """Images to segment (the 2D bundles slice by slice): ``[{"image": path}]``, every image checked first, and no
    two with one output name."""
    files = list_inputs(source, key="image")
    unique_outputs(files, file_stem)
    for f in files:
        check_image(load_volume(f), f, spatial_dims, require_contrast=True)
    return [{"image": f} for f in files]


def translation_inputs(source: Any, spatial_dims: int = 3) -> list[dict[str, str]]:
    """Inputs of a translation (P2): a datalist or folder of (image, label) pairs keeps the labels (they become the
    synthetic volumes' labels); a file or a folder of images gives images alone. Every file is checked first."""
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    items: list[dict[str, str]]
    if path is None:
        items = load_datalist(source, keys=("image",))
    elif path.is_file() and path.suffix.lower() == ".json":
        items = load_datalist(path, keys=("image",))
    elif path.is_dir():
        try:
            items = find_pairs(path)
        except VolganDataError:
            items = [{"image": f} for f in list_inputs(path, key="image")]
    else:
        items = [{"image": f} for f in list_inputs(source, key="image")]
    unique_outputs([it["image"] for it in items])
    with_label = all("label" in it for it in items)
    items = [{k: it[k] for k in (("image", "label") if with_label else ("image",))} for it in items]
    return validate_datalist(items, label_key="label" if with_label else None, spatial_dims=spatial_dims,
                             require_foreground=False)
