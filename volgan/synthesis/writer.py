"""Synthetic (image, label) pairs written as NIfTI + provenance + a datalist, all or nothing."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from monai.data import MetaTensor, NibabelWriter

from volgan.data.datalist import case_name, write_datalist
from volgan.config import as_bool
from volgan.distributed import is_rank_zero
from volgan.errors import VolganConfigError, VolganDataError
from volgan.io import sha256_file
from volgan.synthesis.contact_sheet import contact_sheet

__all__ = ["write_nifti", "SynthesisWriter", "shard_inputs", "run_synthesis"]


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


def _gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (``[obj]`` without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard_inputs(items: Sequence[Mapping[str, Any]], output_dir: str | os.PathLike, suffix: str = "",
                 resume: Any = False, ckpt_path: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """This process's share of the synthesis inputs: under torchrun every ``world_size``-th case from this rank on
    (the whole list otherwise); with ``resume``, cases whose provenance JSON is already in ``output_dir`` (a
    finished case: it is moved there last) are left out first, so a rerun does only what is missing; a finished
    case made with other weights than ``ckpt_path`` is one error (a folder holds one generator's set)."""
    todo = [dict(it) for it in items]
    if as_bool(resume):
        done = {p.name: p for p in Path(output_dir).glob("*_synth.json")} if Path(output_dir).is_dir() else {}
        sha = sha256_file(ckpt_path) if ckpt_path and done else None
        for p in done.values():
            try:
                theirs = json.loads(p.read_text(encoding="utf-8")).get("checkpoint_sha256")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as e:
                raise VolganDataError(str(p), f"unreadable provenance of a finished case ({e})") from e
            if sha and theirs and theirs != sha:
                raise VolganConfigError(f"{p}: made with other weights (sha256 {theirs[:12]}...) than {ckpt_path}: "
                                        "resume into a folder of the same generator, or pass --overwrite true")
        todo = [it for it in todo if f"{case_name(str(it['image']))}{suffix}_synth.json" not in done]
    if dist.is_available() and dist.is_initialized():
        todo = todo[dist.get_rank():: dist.get_world_size()]
    return todo


def run_synthesis(evaluator: Engine, writer: SynthesisWriter) -> None:
    """Run ``evaluator`` (its writer commits at the end); a rank whose share is empty (more ranks than cases, or a
    resumed run with nothing left) only takes part in the writer's final commit."""
    if len(evaluator.data_loader) > 0:
        evaluator.run()
    else:
        writer._start()
        writer.commit()


class SynthesisWriter:
    """Evaluator handler: for each case, writes ``<stem>_synth.nii.gz`` (the generated image), ``<stem>_label.nii.gz``
    (the label map it was made from, perturbed or not) and ``<stem>_synth.json`` (provenance: checkpoint sha256,
    seed, source label map, perturbation, roi/overlap, quality). All files are staged in ``output_dir/.staging-*``
    and moved into place when the run completes (each case's provenance last: it marks the case finished), with
    ``datalist.json`` (decathlon "training" list of (image, label) pairs that a MONAI segmentation bundle reads
    directly), ``contact_sheet.png`` (three planes per case, label contours) and, with ``quality``, ``quality.csv``
    (one row per pair; pairs that fail its thresholds stay out of the datalist). A run that fails leaves nothing.
    Under torchrun each rank writes its own cases; rank 0 writes the datalist, the CSV and the sheet of all of them.

    Args:
        output_dir: destination folder (see ``prepare_output_dir``).
        ckpt_path: generator weights (hashed for provenance).
        seed, extra: provenance entries.
        suffix: appended to each output stem (e.g. ``_p3`` for perturbation seed 3), so several syntheses of
            one label map can share a folder.
        quality: a ``volgan.evaluation.PairQuality`` (``score(image, label)`` -> row with ``kept``), or ``None``.
        contact_sheet_cases: cases on the contact sheet (0: no sheet).
    """

    def __init__(self, output_dir: str | os.PathLike, ckpt_path: str | os.PathLike | None = None, seed: Any = None,
                 extra: Mapping | None = None, suffix: str = "", quality: Any = None, contact_sheet_cases: int = 32):
        self.output_dir = Path(output_dir)
        self.ckpt_path = ckpt_path
        self.ckpt_sha256 = sha256_file(ckpt_path) if ckpt_path and os.path.isfile(ckpt_path) else None
        self.seed, self.extra, self.suffix = seed, dict(extra or {}), str(suffix or "")
        self.quality, self.sheet_cases = quality, int(contact_sheet_cases)
        self.records: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.staging: Path | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._write)
        engine.add_event_handler(Events.COMPLETED, self.commit)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._abort)

    def _start(self, engine: Engine | None = None) -> None:
        _barrier()  # sharded: every rank has checked output_dir before any writes into it
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=str(self.output_dir)))
        self.records, self.rows = [], []

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
            rec = {"image": img_path.name, "source": prov["source"]}
            if label is not None:
                rec["label"] = lab_path.name
            if self.quality is not None and label is not None:
                row = self.quality.score(img_path, lab_path)
                prov["quality"] = row
                rec["kept"] = bool(row["kept"])
                self.rows.append(row)
            (self.staging / f"{stem}_synth.json").write_text(json.dumps(prov, indent=2) + "\n", encoding="utf-8")
            self.records.append(rec)

    def _existing(self, name: str, new: set[str]) -> list[dict[str, Any]]:
        """Entries of an earlier run into this folder (``--overwrite`` / ``--resume``) that this run does not redo."""
        path = self.output_dir / name
        if not path.is_file():
            return []
        try:
            if name.endswith(".csv"):
                with open(path, newline="", encoding="utf-8") as f:
                    return [r for r in csv.DictReader(f) if r.get("image") not in new]
            return [e for e in json.loads(path.read_text(encoding="utf-8")).get("training", [])
                    if e.get("image") not in new]
        except (json.JSONDecodeError, AttributeError, csv.Error, UnicodeDecodeError):
            return []

    def commit(self, engine: Engine | None = None) -> Path:
        """Move this rank's staged cases into ``output_dir`` (each case's provenance last); then rank 0 writes
        ``datalist.json`` (kept pairs of every rank and earlier runs), ``quality.csv`` and ``contact_sheet.png`` in
        its staging folder and moves them in (the datalist last); returns the datalist's path. A failure before the
        moves (a full disk at the datalist write) leaves nothing in ``output_dir``: renames within one folder need
        no space."""
        if self.staging is None:
            raise VolganConfigError("nothing staged: the writer did not run")
        dl = self.output_dir / "datalist.json"
        records = [r for part in _gather(self.records) for r in part]
        rows = [r for part in _gather(self.rows) for r in part]
        sharded = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if sharded:  # every rank's cases in place before rank 0 lists them
            self._move_cases(())
            _barrier()
        staged = self._set_files(records, rows, dl) if is_rank_zero() else []
        if not sharded:
            self._move_cases(staged)
        for f in staged:  # the datalist last
            os.replace(f, self.output_dir / f.name)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None
        _barrier()
        return dl

    def _move_cases(self, exclude: Sequence[Path]) -> None:
        """This rank's staged case files into ``output_dir``, each case's provenance JSON after its volumes."""
        def order(f: Path) -> tuple[str, bool]:
            return f.name.rsplit("_synth", 1)[0].rsplit("_label", 1)[0], f.name.endswith(".json")

        for f in sorted((f for f in self.staging.iterdir() if f not in exclude), key=order):
            os.replace(f, self.output_dir / f.name)

    def _set_files(self, records: list[dict[str, Any]], rows: list[dict[str, Any]], dl: Path) -> list[Path]:
        """quality.csv, contact_sheet.png and datalist.json of the whole set, in the staging folder (in move order)."""
        new = {r["image"] for r in records}
        staged = []
        if self.quality is not None:
            staged.append(self._write_csv(self._existing("quality.csv", new) + rows))
        cases = [(self._staged_or_final(r["image"]), self._staged_or_final(r["label"]),
                  r["image"].replace("_synth.nii.gz", "") + ("" if r.get("kept", True) else " (filtered out)"))
                 for r in records if "label" in r]
        if self.sheet_cases > 0 and cases:
            staged.append(contact_sheet(cases, self.staging / "contact_sheet.png", self.sheet_cases))
        kept = [{k: v for k, v in r.items() if k != "kept"} for r in records if r.get("kept", True)]
        # names under the staging folder: relative to it they read as they will relative to output_dir
        items = [{**e, **{k: str(self.staging / e[k]) for k in ("image", "label") if k in e}}
                 for e in self._existing(dl.name, new) + kept]
        staged.append(write_datalist(self.staging / dl.name, items, description="volgan synthetic (image, label) pairs"))
        return staged

    def _staged_or_final(self, name: str) -> Path:
        """A case's file: in this rank's staging folder, or (another rank's) already in ``output_dir``."""
        p = self.staging / name
        return p if p.exists() else self.output_dir / name

    def _write_csv(self, rows: list[dict[str, Any]]) -> Path:
        cols = list(self.quality.columns())
        cols += [c for r in rows for c in r if c not in cols]
        path = self.staging / "quality.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(cols)), extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        return path
