"""The label convention each bundle expects, read from its ``configs/metadata.json`` (key
``volgan_label_convention``): the label values and their meanings, the values every label map must hold, and the
options that fix a label map without them. ``volgan check-data --bundle``, training and synthesis check the data
against it, so a label map the method would misread (MM-GAN on raw {0, 1} tumour labels: P1 Sec. V-A needs
3 = rest of the brain) is one error naming the fix, never a silent run."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from volgan.bundle import bundle_path
from volgan.errors import VolganConfigError, VolganDataError

__all__ = ["CONVENTION_KEY", "LabelConvention", "label_convention"]

#: the metadata.json key holding a bundle's label convention
CONVENTION_KEY = "volgan_label_convention"


def _values(values: Iterable[Any]) -> str:
    return "{" + ", ".join(str(int(v)) for v in sorted({int(v) for v in values})) + "}"


@dataclass(frozen=True)
class LabelConvention:
    """A bundle's label convention (see the module docstring).

    Args:
        method: the method's name in messages (``"MM-GAN"``).
        labels: label value -> meaning.
        required: label value -> what it is, for the values every label map must hold (when the run's
            ``label_values`` include them).
        fix: the options that supply or relabel a missing required label (one sentence).
        added_by: the options that add the required labels to label maps without them (``--brain_as_label``).
        label_values: the values the method works with by default (``None``: any, e.g. "every label > 0").
    """

    method: str
    labels: dict[int, str] = field(default_factory=dict)
    required: dict[int, str] = field(default_factory=dict)
    fix: str = ""
    added_by: str = ""
    label_values: tuple[int, ...] | None = None

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any], where: str = "metadata.json") -> LabelConvention:
        """The convention under ``CONVENTION_KEY`` of a bundle's metadata."""
        conv = meta.get(CONVENTION_KEY)
        if not isinstance(conv, Mapping) or "method" not in conv:
            raise VolganConfigError(f"{where}: no {CONVENTION_KEY!r} with a 'method' (the bundle's label convention)")
        try:
            return cls(method=str(conv["method"]), labels={int(k): str(v) for k, v in conv.get("labels", {}).items()},
                       required={int(k): str(v) for k, v in conv.get("required", {}).items()},
                       fix=str(conv.get("fix", "")), added_by=str(conv.get("added_by", "")),
                       label_values=None if conv.get("label_values") is None
                       else tuple(int(v) for v in conv["label_values"]))
        except (TypeError, ValueError) as e:
            raise VolganConfigError(f"{where}: {CONVENTION_KEY} label values must be integers ({e})") from e

    def required_values(self, label_values: Iterable[int] | None = None) -> list[int]:
        """The required values a run with ``label_values`` needs (all of them when ``label_values`` is None)."""
        allowed = None if label_values is None else {int(v) for v in label_values}
        return sorted(v for v in self.required if allowed is None or v in allowed)

    def problem(self, values: Iterable[Any], path: Any, label_values: Iterable[int] | None = None,
                added: bool = False) -> VolganDataError | None:
        """The problem of a label map holding ``values`` (``None`` when it fits): a required value missing, or, with
        ``added`` (the run adds the required labels, e.g. ``--brain_as_label``), one already there."""
        present = {int(v) for v in values}
        need = self.required_values(label_values)
        if added:
            clash = [v for v in need if v in present]
            if clash:
                return VolganDataError(path, f"label map has values {_values(present)} and already contains "
                                       f"{self._names(clash)}, which {self.added_by or 'the run'} adds: drop that "
                                       "option, or relabel")
            return None
        missing = [v for v in need if v not in present]
        if missing:
            return VolganDataError(path, f"label map has values {_values(present)}: {self.method} needs "
                                   f"{self._names(missing)}; {self.fix}")
        return None

    def check(self, values: Iterable[Any], path: Any, label_values: Iterable[int] | None = None,
              added: bool = False) -> None:
        """Raise ``problem``'s error, if any."""
        err = self.problem(values, path, label_values, added)
        if err is not None:
            raise err

    def _names(self, values: Iterable[int]) -> str:
        return " and ".join(f"a {self.labels.get(v, 'label')} label ({v}: {self.required[v]})" for v in values)


def label_convention(bundle: str | os.PathLike) -> LabelConvention:
    """The label convention of bundle ``bundle``: an installed bundle's name, or a bundle folder (its
    ``configs/metadata.json``)."""
    root = bundle_path(str(bundle)) if not os.path.isdir(bundle) else bundle
    path = os.path.join(root, "configs", "metadata.json")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise VolganConfigError(f"{path}: unreadable bundle metadata ({e})") from e
    return LabelConvention.from_metadata(meta, path)
