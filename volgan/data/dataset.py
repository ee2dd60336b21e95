"""Turn the bundle's ``dataset_dir`` into a checked datalist; split datalists by case or by subject; loaders that
always give full minibatches (few-label regimes)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import DataLoader, DistributedSampler

from volgan.data.datalist import load_datalist
from volgan.data.samples import make_sample_cases
from volgan.data.validate import validate_datalist
from volgan.errors import VolganConfigError, VolganDataError

__all__ = ["resolve_dataset", "split_datalist", "full_batch_loader", "distributed_loader"]

SAMPLE = "sample"


def resolve_dataset(
    dataset_dir: str | os.PathLike | Sequence[dict],
    work_dir: str | os.PathLike | None = None,
    validate: bool = True,
    label_values: Iterable[int] | None = None,
    spatial_dims: int = 3,
    label_key: str | None = "label",
    image_channels: int | None = None,
    optional: bool = False,
) -> list[dict[str, Any]]:
    """Datalist for ``dataset_dir``: a decathlon JSON, a folder of pairs, a list, or ``"sample"``.

    ``"sample"`` materialises the embedded sample cases (``volgan.data.samples``) in ``work_dir/sample_data``.
    With ``validate``, every file is loaded and checked first (``validate_datalist``), so bad input stops
    the run before anything is trained or written. ``optional``: ``None``/empty gives ``[]`` (an optional
    validation set); otherwise a missing ``dataset_dir`` is one line saying it is required.
    """
    if dataset_dir is None or (isinstance(dataset_dir, (str, list, tuple)) and not dataset_dir):
        if optional:
            return []
        raise VolganConfigError("--dataset_dir is required: a datalist JSON or a folder of (image, label) pairs")
    if isinstance(dataset_dir, str) and dataset_dir == SAMPLE:
        base = Path(work_dir) if work_dir is not None else Path.cwd()
        path = base / "sample_data" / "dataset.json"
        if not path.is_file():
            path = make_sample_cases(base / "sample_data")
        dataset_dir = path
    keys = ("image", label_key) if label_key else ("image",)
    items = load_datalist(dataset_dir, keys=keys)
    if validate:
        items = validate_datalist(items, label_key=label_key, spatial_dims=spatial_dims, label_values=label_values,
                                  image_channels=image_channels)
    return items


def split_datalist(
    items: Sequence[dict], val_fraction: float = 0.25, seed: int = 0, group_key: str | None = None,
    source: Any = None, remedy: str = "add cases or give the validation set explicitly",
) -> tuple[list[dict], list[dict]]:
    """Random (train, validation) split; with ``group_key`` (e.g. ``"subject"``) whole groups go to one side.
    Fewer than two cases is a ``VolganDataError`` naming ``source`` (the dataset) and ``remedy``."""
    if not 0.0 < val_fraction < 1.0:
        raise VolganConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.RandomState(seed)

    first: dict[str, int] = {}
    for i, it in enumerate(items):
        first.setdefault(str(it.get("image", i)), i)

    def group(i: int, it: dict) -> str:  # without a group key: the case, repeated entries of one image together
        return str(it.get(group_key, i)) if group_key else str(first[str(it.get("image", i))])

    groups = sorted({group(i, it) for i, it in enumerate(items)})
    if len(groups) < 2:
        raise VolganDataError(source, f"{len(groups)} case(s) (or groups): at least two are needed to split into "
                                      f"training and validation; {remedy}")
    order = [groups[i] for i in rng.permutation(len(groups))]
    n_val = min(max(1, int(round(len(groups) * val_fraction))), len(groups) - 1)
    val_groups = set(order[:n_val])
    train = [dict(it) for i, it in enumerate(items) if group(i, it) not in val_groups]
    val = [dict(it) for i, it in enumerate(items) if group(i, it) in val_groups]
    return train, val


def full_batch_loader(dataset: Any, batch_size: int, pin_memory: bool = False) -> DataLoader:
    """A shuffling loader whose every minibatch is full: with fewer items than ``batch_size`` (few-label regimes)
    items are drawn with replacement, and an epoch is ``max(len, batch_size)`` draws (P4/P5 minibatches)."""
    n, b = len(dataset), int(batch_size)
    sampler = torch.utils.data.RandomSampler(dataset, replacement=n < b, num_samples=max(n, b))
    return DataLoader(dataset, batch_size=b, sampler=sampler, drop_last=True, pin_memory=bool(pin_memory))


def distributed_loader(dataset: Any, batch_size: int, pin_memory: bool = False) -> DataLoader:
    """``full_batch_loader`` under DDP: each rank draws its share (``DistributedSampler``, shuffled); minibatches
    are full whenever a rank's share allows one."""
    b = int(batch_size)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return DataLoader(dataset, batch_size=b, sampler=DistributedSampler(dataset, shuffle=True),
                      drop_last=len(dataset) // world >= b, pin_memory=bool(pin_memory))
