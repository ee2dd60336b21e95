"""Whole-volume synthesis with sliding-window inference, written as NIfTI + datalist + provenance (P1 Sec. V-D).

The bundle's ``inference.yaml`` is assembled from these pieces (MONAI Label reads its ``network_def``,
``preprocessing``, ``inferer`` and ``postprocessing``); ``synthesize`` runs that bundle from Python.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor, NibabelWriter
from monai.inferers import SlidingWindowInferer
from monai.transforms import AsDiscreted, Compose, CopyItemsd, DeleteItemsd, EnsureTyped, LoadImaged

from volgan.data.datalist import list_inputs, write_datalist
from volgan.data.transforms import TumourPerturbd
from volgan.data.validate import ValidateLabelMapd, check_label, load_volume
from volgan.errors import VolganConfigError, VolganDataError
from volgan.utils import as_bool, sha256_file

__all__ = [
    "check_inputs",
    "translation_inputs",
    "prepare_output_dir",
    "synthesis_preprocessing",
    "make_inferer",
    "SynthesisWriter",
    "synthesize",
    "synthesize_augmentations",
    "SlicewiseInferer",
    "synthesize_slices",
    "OfflineGanSlices",
]

logger = logging.getLogger(__name__)


def check_inputs(source: Any, label_values: Sequence[int] | None = None, spatial_dims: int = 3,
                 key: str = "label") -> list[dict[str, str]]:
    """Resolve ``input`` (file, folder, datalist) to ``[{"image": label_map_path}]`` and check every label map
    before anything is written (unreadable, wrong dims, NaN, values outside ``label_values``, empty)."""
    files = list_inputs(source, key=key)
    for f in files:
        check_label(load_volume(f), f, label_values, spatial_dims)
    return [{"image": f} for f in files]


def translation_inputs(source: Any, spatial_dims: int = 3) -> list[dict[str, str]]:
    """Inputs of a translation (P2): a datalist or folder of (image, label) pairs keeps the labels (they become the
    synthetic volumes' labels); a file or a folder of images gives images alone. Every file is checked first."""
    from volgan.data.datalist import find_pairs, load_datalist
    from volgan.data.validate import validate_datalist

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
    with_label = all("label" in it for it in items)
    items = [{k: it[k] for k in (("image", "label") if with_label else ("image",))} for it in items]
    return validate_datalist(items, label_key="label" if with_label else None, spatial_dims=spatial_dims,
                             require_foreground=False)


def prepare_output_dir(output_dir: str | os.PathLike, overwrite: Any = False) -> Path:
    """Create ``output_dir``; refuse a non-empty one unless ``overwrite`` (outputs are never replaced silently)."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise VolganConfigError(f"output_dir {out} exists and is not a folder")
    if out.is_dir() and any(p for p in out.iterdir() if not p.name.startswith(".staging")) and not as_bool(overwrite):
        raise VolganConfigError(f"output_dir {out} is not empty; pass --overwrite true to write into it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def synthesis_preprocessing(num_classes: int = 5, label_values: Sequence[int] | None = (0, 1, 2, 3, 4),
                            spatial_dims: int = 3, perturb: Any = False, perturb_args: Mapping | None = None,
                            seed: int | None = 0, validate: bool = True) -> Compose:
    """Label map in ``image`` -> one-hot network input in ``image``, the (perturbed) label map kept in ``label``.

    With ``perturb``, the lesion is deformed first (``TumourPerturbd``, seeded), for the augmentation workflow.
    """
    xforms: list = [LoadImaged(keys="image", image_only=True, ensure_channel_first=True)]
    if validate:
        xforms.append(ValidateLabelMapd(keys="image", spatial_dims=spatial_dims, label_values=label_values))
    xforms.append(CopyItemsd(keys="image", names="label"))
    if as_bool(perturb):
        t = TumourPerturbd(keys="label", **dict(perturb_args or {}))
        if seed is not None:
            t.set_random_state(seed=int(seed))
        xforms += [t, DeleteItemsd(keys="image"), CopyItemsd(keys="label", names="image")]
    xforms += [EnsureTyped(keys="image", dtype=torch.float32), AsDiscreted(keys="image", to_onehot=int(num_classes))]
    return Compose(xforms)


def make_inferer(roi_size: Sequence[int] = (96, 96, 96), sw_batch_size: int = 1, overlap: float = 0.5,
                 mode: str = "gaussian") -> SlidingWindowInferer:
    """MONAI ``SlidingWindowInferer`` with gaussian blending; pads with edge values (one-hot stays one-hot)."""
    if not 0 <= float(overlap) < 1:
        raise VolganConfigError(f"overlap must be in [0, 1), got {overlap}")
    return SlidingWindowInferer(roi_size=list(roi_size), sw_batch_size=int(sw_batch_size), overlap=float(overlap),
                                mode=mode, padding_mode="replicate")


def _write_nifti(array: torch.Tensor | np.ndarray, meta_ref: Any, path: Path, dtype: Any) -> None:
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
        name = Path(src).name
        for suf in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
            if name.endswith(suf):
                name = name[: -len(suf)]
                break
        from volgan.data.datalist import _IMAGE_TAGS, _LABEL_TAGS, _split_tag

        name = _split_tag(name, _LABEL_TAGS + _IMAGE_TAGS) or name
        return name + self.suffix

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
            _write_nifti(out["pred"], source, img_path, np.float32)
            if label is not None:
                _write_nifti(label, source, lab_path, np.uint8)
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
        """Move the staged files into ``output_dir`` and write ``datalist.json``; returns its path."""
        if self.staging is None:
            raise VolganConfigError("nothing staged: the writer did not run")
        for f in sorted(self.staging.iterdir()):
            os.replace(f, self.output_dir / f.name)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging = None
        items = [{**r, **{k: str(self.output_dir / r[k]) for k in ("image", "label") if k in r}} for r in self.records]
        existing = []
        dl = self.output_dir / "datalist.json"
        if dl.is_file():
            try:
                existing = [e for e in json.loads(dl.read_text(encoding="utf-8")).get("training", [])
                            if e.get("image") not in {r["image"] for r in self.records}]
                existing = [{**e, **{k: str(self.output_dir / e[k]) for k in ("image", "label") if k in e}}
                            for e in existing]
            except (json.JSONDecodeError, AttributeError):
                existing = []
        return write_datalist(dl, existing + items, description="volgan synthetic (image, label) pairs")


def synthesize(input: Any, ckpt_path: str | os.PathLike, output_dir: str | os.PathLike,  # noqa: A002
               bundle: str = "mmgan_label2mri_3d", **overrides: Any) -> Path:
    """Synthesise whole volumes from label maps with a trained generator; returns the written ``datalist.json``.

    Runs the bundle's ``inference.yaml`` (sliding window, AMP on CUDA) with ``input`` (a file, folder or
    datalist of label maps), ``ckpt_path`` and ``output_dir``; other bundle ids (``roi_size``, ``overlap``,
    ``perturb``, ``seed``, ``device``, ``overwrite``, ``gen_channels`` ...) pass as keyword arguments.
    """
    from volgan.bundle import run_bundle

    run_bundle(bundle, "inference", input=str(input) if isinstance(input, (str, os.PathLike)) else input,
               ckpt_path=str(ckpt_path), output_dir=str(output_dir), **overrides)
    return Path(output_dir) / "datalist.json"


def synthesize_augmentations(label_maps: Any, ckpt_path: str | os.PathLike, output_dir: str | os.PathLike,
                             copies: int = 1, seed: int = 0, bundle: str = "mmgan_label2mri_3d",
                             **overrides: Any) -> list[dict[str, str]]:
    """MM-GAN's augmentation workflow (Sec. V-D): ``copies`` perturbed versions of every label map (lesion
    deformed inside the organ, perturbation seeds ``seed + 1 .. seed + copies``), each synthesised into an
    image; all pairs land in ``output_dir`` with one ``datalist.json``. Returns the (image, label) entries.
    ``copies = 3`` with ``mix_datalists(real, pairs, 300)`` gives the paper's "300 % F + R".
    """
    from volgan.data.datalist import load_datalist

    if copies < 1:
        raise VolganConfigError(f"copies must be >= 1, got {copies}")
    prepare_output_dir(output_dir, overrides.pop("overwrite", False))
    for k in range(copies):
        synthesize(label_maps, ckpt_path, output_dir, bundle=bundle, perturb=True, seed=int(seed) + 1 + k,
                   overwrite=True, **overrides)
    return load_datalist(Path(output_dir) / "datalist.json")


class SlicewiseInferer:
    """MONAI-style inferer running a 2D network slice by slice over (B, C, X, Y, Z) volumes (P3, P5): each slice
    is resized to ``size`` (bicubic), segmented, and its logits resized back (bilinear) and stacked, so the
    output is (B, K, X, Y, Z) at the input's geometry. 2D inputs (B, C, H, W) go through in one pass."""

    def __init__(self, size: Sequence[int] | None = (256, 256), axis: int = 2, batch_size: int = 16):
        self.size, self.axis, self.batch_size = (tuple(size) if size else None), int(axis), int(batch_size)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        from volgan.data.slices import resize_slice

        from monai.utils import convert_to_dst_type

        x = (inputs.as_tensor() if isinstance(inputs, MetaTensor) else torch.as_tensor(inputs)).float()
        if x.ndim == 4:
            out = network(torch.stack([resize_slice(s, self.size, "bicubic") for s in x]))
            out = torch.stack([resize_slice(o.float(), x.shape[2:], "bilinear") for o in out])
            return convert_to_dst_type(out, inputs, dtype=out.dtype)[0]  # keeps a MetaTensor's geometry
        outs = []
        for vol in x:
            n = vol.shape[self.axis + 1]
            plane = [s for a, s in enumerate(vol.shape[1:]) if a != self.axis]
            slices = []
            for start in range(0, n, self.batch_size):
                batch = torch.stack([resize_slice(vol.select(self.axis + 1, i), self.size, "bicubic")
                                     for i in range(start, min(start + self.batch_size, n))])
                logits = network(batch).float()
                slices += [resize_slice(lg, plane, "bilinear") for lg in logits]
            outs.append(torch.stack(slices, dim=self.axis + 1))
        out = torch.stack(outs)
        return convert_to_dst_type(out, inputs, dtype=out.dtype)[0]  # keeps a MetaTensor's geometry


@torch.no_grad()
def synthesize_slices(generator: torch.nn.Module, slices: Sequence[Mapping[str, Any]], cond_transform: Any,
                      copies: int = 1, deform: bool = True, cond_key: str = "cond", seed: int = 0,
                      device: Any = "cpu", batch_size: int = 16) -> list[dict[str, Any]]:
    """Offline GAN augmentation of 2D slices (P3's "GAN augmentation" baselines): ``copies`` new (image, label)
    pairs per real slice. Each real pair is first deformed together (``deform``: MONAI ``RandAffined`` rotation
    / scaling / translation and ``Rand2DElasticd``, seeded) so the new label is a new shape; ``cond_transform``
    (the bundle's mask + Canny-edges pipeline) builds the generator input from the deformed pair, and the
    trained ``generator`` turns it into the synthetic image. Items: ``{"image": (1, H, W) in [-1, 1],
    "label": (1, H, W) the deformed label, "case": -1, "slice": source index}``."""
    from monai.transforms import Rand2DElasticd, RandAffined
    from monai.utils import convert_to_tensor

    if copies < 1:
        raise VolganConfigError(f"copies must be >= 1, got {copies}")
    keys = ["image", "label"]
    warps = [RandAffined(keys, prob=1.0, rotate_range=0.26, scale_range=0.1, translate_range=(8, 8),
                         mode=("bilinear", "nearest"), padding_mode="border"),
             Rand2DElasticd(keys, spacing=(20, 20), magnitude_range=(1, 2), prob=1.0, mode=("bilinear", "nearest"),
                            padding_mode="border")]
    for i, w in enumerate(warps):
        w.set_random_state(seed=int(seed) + i)
    conds, out = [], []
    for k in range(copies):
        for si, item in enumerate(slices):
            d = {"image": torch.as_tensor(item["image"]).float(), "label": torch.as_tensor(item["label"]).float()}
            if deform:
                for w in warps:
                    d = w(d)
            d = {k: convert_to_tensor(v, track_meta=False).float() for k, v in d.items()}
            d["label"] = d["label"].round().long()
            conds.append(convert_to_tensor(cond_transform(dict(d))[cond_key], track_meta=False).float())
            out.append({"label": d["label"], "case": -1, "slice": si})
    was_training = generator.training
    generator.eval()
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    for start in range(0, len(conds), batch_size):
        fake = generator(torch.stack(conds[start:start + batch_size]).to(dev)).float().clamp(-1, 1).cpu()
        for j, f in enumerate(fake):
            out[start + j]["image"] = f
    generator.train(was_training)
    return out


class OfflineGanSlices(torch.utils.data.Dataset):
    """The slices of ``synthesize_slices`` as a dataset that generates them on first access, so a bundle can wire
    it into a data loader before the GAN has trained (P3's offline baselines: ``gan_mix``, ``gan_pretrain``).
    ``len`` is known up front: ``copies`` x the number of real slices."""

    def __init__(self, generator: torch.nn.Module, slices: Sequence[Mapping[str, Any]], cond_transform: Any,
                 copies: int = 1, **kwargs: Any):
        self.generator, self.slices, self.cond_transform = generator, slices, cond_transform
        self.copies, self.kwargs = int(copies), kwargs
        self._items: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return len(self.slices) * self.copies

    @property
    def items(self) -> list[dict[str, Any]]:
        if self._items is None:
            logger.info("generating %d synthetic slices from the trained generator", len(self))
            self._items = synthesize_slices(self.generator, self.slices, self.cond_transform, self.copies,
                                            **self.kwargs)
        return self._items

    def __getitem__(self, i: int) -> dict[str, Any]:
        return dict(self.items[i])
