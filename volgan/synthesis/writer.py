"""Synthetic (image, label) pairs written as NIfTI + provenance + a datalist, all or nothing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor, NibabelWriter

from volgan.data.datalist import case_name, write_datalist
from volgan.errors import VolganConfigError, VolganDataError
from volgan.io import sha256_file

__all__ = ["write_nifti", "SynthesisWriter"]


def write_nifti(array: torch.Tensor | np.ndarray, meta_ref: Any, path: Path, dtype: Any) -> None:
    writer = NibabelWriter(output_dtype=dtype)
    arr = array.detach().cpu() if isinstance(array, torch.Tensor) else torch.as_tensor(array)
    writer.set_data_array(arr, channel_dim=0 if arr.shape[0] > 1 else 0, squeeze_end_dims=True)
    meta = dict(meta_ref.meta) if isinstance(meta_ref, MetaTensor) else {}
    if isinstance(meta_ref, MetaTensor):
        meta["affine"] = meta_ref.affine
        meta["original_affine"] = meta_ref.affine
    writer.set_metadata(meta, resample=False)
    writer.write(str(path), verbose=False)


class SynthesisWriter:
    """Evaluator handler: for each case, writes ``<stem>_synth.nii.gz`` (the generated image), ``<stem>_label.nii.gz``
    (the label map it was made from, perturbed or not) and ``<stem>_synth.json`` (provenance: checkpoint sha256,
    seed, source label map, perturbation, roi/overlap). All files are staged in ``output_dir/.staging-*`` and
    moved into place when the run completes, with ``datalist.json`` (decathlon "training" list of
    (image, label) pairs that a MONAI segmentation bundle reads directly). A run that fails leaves nothing.

    Args:
        output_dir: destination folder (see ``prepare_output_dir``).
        ckpt_path: generator weights (hashed for provenance).
        seed, extra: provenance entries.
        suffix: appended to each output stem (e.g. ``_p3`` for perturbation seed 3), so several syntheses of
            one label map can share a folder.
    """

    def __init__(self, output_dir: str | os.PathLike, ckpt_path: str | os.PathLike | None = None, seed: Any = None,
                 extra: Mapping | None = None, suffix: str = ""):
        self.output_dir = Path(output_dir)
        self.ckpt_path = ckpt_path
        self.ckpt_sha256 = sha256_file(ckpt_path) if ckpt_path and os.path.isfile(ckpt_path) else None
        self.seed, self.extra, self.suffix = seed, dict(extra or {}), str(suffix or "")
        self.records: list[dict[str, Any]] = []
        self.staging: Path | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write)
        engine.add_event_handler(Events.COMPLETED, self.commit)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._abort)

    def _start(self, engine: Engine | None = None) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=str(self.output_dir)))
        self.records = []

    def _abort(self, engine: Engine, e: BaseException) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
        raise e

    def _stem(self, src: str) -> str:
        return case_name(src) + self.suffix

    def _write(self, engine: Engine) -> None:
        if self.staging is None:
            self._start()
        batch, output = engine.state.batch, engine.state.output
        if isinstance(batch, Mapping):  # not decollated
            raise VolganConfigError("SynthesisWriter needs a decollated evaluator (decollate=True)")
        for item, out in zip(batch, output):
            source = item["image"]  # MM-GAN: the label map; translation: the source image
            src = str(source.meta.get("filename_or_obj", "input")) if isinstance(source, MetaTensor) else "input"
            stem = self._stem(src)
            label = item.get("label")
            img_path, lab_path = self.staging / f"{stem}_synth.nii.gz", self.staging / f"{stem}_label.nii.gz"
            if img_path.exists():
                raise VolganDataError(src, f"two inputs map to the same output name {img_path.name}")
            write_nifti(out["pred"], source, img_path, np.float32)
            if label is not None:
                write_nifti(label, source, lab_path, np.uint8)
            pert = item.get("label_perturbation")
            prov = {
                "source": os.path.abspath(src),
                "source_label_map": os.path.abspath(str(label.meta.get("filename_or_obj", src)))
                if isinstance(label, MetaTensor) else None,
                "checkpoint": os.path.abspath(self.ckpt_path) if self.ckpt_path else None,
                "checkpoint_sha256": self.ckpt_sha256,
                "seed": self.seed,
                "perturbation": json.loads(pert) if isinstance(pert, str) else (pert or {"perturbed": False}),
                "image": img_path.name,
                "label": lab_path.name if label is not None else None,
                **self.extra,
            }
            (self.staging / f"{stem}_synth.json").write_text(json.dumps(prov, indent=2) + "\n", encoding="utf-8")
            rec = {"image": img_path.name, "source": prov["source"]}
            if label is not None:
                rec["label"] = lab_path.name
            self.records.append(rec)

    def commit(self, engine: Engine | None = None) -> Path:
        """Write ``datalist.json`` into the staging folder, then move the staged files into ``output_dir`` (the
        datalist last); returns its path. A failure before the moves (a full disk at the datalist write) leaves
        nothing in ``output_dir``: renames within one folder need no space."""
        if self.staging is None:
            raise VolganConfigError("nothing staged: the writer did not run")
        dl = self.output_dir / "datalist.json"
        existing = []
        if dl.is_file():  # an earlier run into this folder (--overwrite): keep its other entries
            try:
                existing = [e for e in json.loads(dl.read_text(encoding="utf-8")).get("training", [])
                            if e.get("image") not in {r["image"] for r in self.records}]
            except (json.JSONDecodeError, AttributeError):
                existing = []
        # paths under the staging folder: relative to it they read as they will relative to output_dir
        items = [{**e, **{k: str(self.staging / e[k]) for k in ("image", "label") if k in e}}
                 for e in existing + self.records]
        staged = write_datalist(self.staging / dl.name, items, description="volgan synthetic (image, label) pairs")
        for f in sorted(self.staging.iterdir()):
            if f != staged:
                os.replace(f, self.output_dir / f.name)
        os.replace(staged, dl)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None
        return dl
