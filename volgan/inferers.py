"""THE inference path: every sliding-window (3D) and slice-wise (2D) inference in volgan goes through here, with its
settings passed in: synthesis, training-time validation, segmentation prediction, the S-score and every evaluation.

- ``sliding_window_inferer``: MONAI's ``SlidingWindowInferer`` (gaussian blending by default).
- ``TiledSynthesisInferer``: seam-free whole-volume synthesis, equal to one pass of the generator (issue #19).
- ``SlicewiseInferer``: a 2D network over volumes slice by slice, each slice prepared as in training
  (``volgan.data.slices.network_slice``), logits resized back to the volume's grid.
- ``predict`` / ``predict_labels``: one network on one channel-first image through an inferer, AMP on CUDA.
- ``SlicewiseSegmentation``: preprocessing, inferer and postprocessing of the 2D bundles' ``inference.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SimpleInferer, SlidingWindowInferer, sliding_window_inference
from monai.transforms import (
    AsDiscreted,
    Compose,
    KeepLargestConnectedComponentd,
    LoadImaged,
    SaveImaged,
)
from monai.utils import convert_to_dst_type

from volgan.config import amp_enabled, as_bool, resolve_device
from volgan.data.slices import ScaleToUnitRanged, network_slice, resize_slice
from volgan.data.validate import ValidateVolumed
from volgan.errors import VolganConfigError
from volgan.handlers import StagedOutputs

__all__ = ["sliding_window_inferer", "TiledSynthesisInferer", "synthesis_inferer", "SlicewiseInferer", "predict", "predict_labels", "predict_slicewise",
           "SlicewiseSegmentation",
           "SYNTHESIS_PADDING", "SEGMENTATION_PADDING"]

#: padding of synthesis windows: edge values (a one-hot label map stays one-hot at the border)
SYNTHESIS_PADDING = "replicate"
#: padding of segmentation windows (the segmentors were evaluated this way in every reported result)
SEGMENTATION_PADDING = "constant"


def sliding_window_inferer(roi_size: Sequence[int] = (96, 96, 96), sw_batch_size: int = 1, overlap: float = 0.5,
                           mode: str = "gaussian", padding_mode: str = SYNTHESIS_PADDING) -> SlidingWindowInferer:
    """MONAI ``SlidingWindowInferer`` with ``roi_size`` windows overlapping by ``overlap``, blended by ``mode``."""
    if not 0 <= float(overlap) < 1:
        raise VolganConfigError(f"overlap must be in [0, 1), got {overlap}")
    if any(int(r) < 1 for r in roi_size):
        raise VolganConfigError(f"roi_size must be positive, got {list(roi_size)}")
    return SlidingWindowInferer(roi_size=[int(r) for r in roi_size], sw_batch_size=int(sw_batch_size),
                                overlap=float(overlap), mode=mode, padding_mode=padding_mode)


class TiledSynthesisInferer(Inferer):
    """Whole-volume synthesis that equals one pass of the generator over the whole volume (issue #19): the
    generator's ``forward_tiled`` runs each U-Net block in tiles of ``roi_size`` voxels (plus the halo the block
    reads), on the grid of the whole pass, so there are no window borders and no seams; a convolution needs the
    memory of one tile. The generator needs normalisation with fixed statistics (``norm_stats="running"``).

    Args:
        roi_size: tile size per axis (the memory of one convolution).
        store: device of the feature maps kept between blocks (default: the input's; ``"cpu"`` keeps a GPU's
            memory to one tile's worth).
    """

    def __init__(self, roi_size: Sequence[int] = (96, 96, 96), store: Any = None):
        super().__init__()
        if any(int(r) < 1 for r in roi_size):
            raise VolganConfigError(f"roi_size must be positive, got {list(roi_size)}")
        self.roi_size, self.store = [int(r) for r in roi_size], store

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        tiled = getattr(network, "forward_tiled", None)
        if tiled is None:
            raise VolganConfigError(f"{type(network).__name__} has no forward_tiled: synthesise it with blended "
                                    "windows (volgan.inferers.sliding_window_inferer)")
        x = inputs.as_tensor() if isinstance(inputs, MetaTensor) else torch.as_tensor(inputs)
        out = tiled(x, self.roi_size, store=self.store).float()
        return convert_to_dst_type(out, inputs, dtype=out.dtype)[0]  # keeps a MetaTensor's geometry


def synthesis_inferer(roi_size: Sequence[int] = (96, 96, 96), overlap: float = 0.5, norm_stats: str = "running",
                      sw_batch_size: int = 1) -> Inferer:
    """The inferer of whole-volume synthesis: ``TiledSynthesisInferer`` (equal to one whole-volume pass) for
    generators with fixed normalisation statistics (``norm_stats="running"``, volgan's default); MONAI's blended
    ``SlidingWindowInferer`` (``overlap``) for the paper's per-input instance norm (``"instance"``), whose
    statistics differ from window to window (seams, issue #19)."""
    if norm_stats == "running":
        return TiledSynthesisInferer(roi_size)
    if norm_stats == "instance":
        return sliding_window_inferer(roi_size, sw_batch_size, overlap)
    raise VolganConfigError(f"norm_stats must be 'running' or 'instance', got {norm_stats!r}")


class SlicewiseInferer(Inferer):
    """MONAI inferer running a 2D network slice by slice over (B, C, X, Y, Z) volumes (P3, P4, P5): each slice along
    ``axis`` is prepared as in training (``network_slice``: resized to ``size``, clipped to [-1, 1]), segmented in
    batches of ``batch_size``, and its logits resized back (bilinear) and stacked, so the output is (B, K, X, Y, Z)
    at the input's geometry. 2D inputs (B, C, H, W) go through in one pass. With ``window`` (the 2D bundles'
    ``crop_size``: the network trained on crops) each prepared slice is segmented by MONAI's 2D sliding windows of
    that size (gaussian blending, overlap ``overlap``, padding at -1, the background of the [-1, 1] scale)."""

    def __init__(self, size: Sequence[int] | None = (256, 256), axis: int = 2, batch_size: int = 16,
                 window: Sequence[int] | None = None, overlap: float = 0.25):
        super().__init__()
        self.size, self.axis, self.batch_size = (tuple(size) if size else None), int(axis), int(batch_size)
        self.window = tuple(int(k) for k in window) if window else None
        self.overlap = float(overlap)

    def segment(self, slices: torch.Tensor, network: torch.nn.Module) -> torch.Tensor:
        """The network's logits of a (N, C, h, w) batch of prepared slices: one pass, or windows of ``window``."""
        if self.window is None:
            return network(slices)
        return sliding_window_inference(slices, self.window, self.batch_size, network, overlap=self.overlap,
                                        mode="gaussian", padding_mode="constant", cval=-1.0)

    def __call__(self, inputs: torch.Tensor, network: torch.nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        x = (inputs.as_tensor() if isinstance(inputs, MetaTensor) else torch.as_tensor(inputs)).float()
        if x.ndim == 4:
            out = self.segment(torch.stack([network_slice(s, self.size) for s in x]), network)
            out = torch.stack([resize_slice(o.float(), x.shape[2:], "bilinear") for o in out])
            return convert_to_dst_type(out, inputs, dtype=out.dtype)[0]  # keeps a MetaTensor's geometry
        outs = []
        for vol in x:
            n = vol.shape[self.axis + 1]
            plane = [s for a, s in enumerate(vol.shape[1:]) if a != self.axis]
            slices = []
            for start in range(0, n, self.batch_size):
                batch = torch.stack([network_slice(vol.select(self.axis + 1, i), self.size)
                                     for i in range(start, min(start + self.batch_size, n))])
                logits = self.segment(batch, network).float()
                slices += [resize_slice(lg, plane, "bilinear") for lg in logits]
            outs.append(torch.stack(slices, dim=self.axis + 1))
        out = torch.stack(outs)
        return convert_to_dst_type(out, inputs, dtype=out.dtype)[0]  # keeps a MetaTensor's geometry


@torch.no_grad()
def predict(network: torch.nn.Module, image: torch.Tensor, inferer: Inferer | None = None, device: Any = None,
            amp: Any = True) -> torch.Tensor:
    """The network's output (B=1, K, ...) for one channel-first ``image`` through ``inferer`` (default: one pass),
    in eval mode, with AMP when ``amp`` and on CUDA; returned as float32 on the CPU."""
    dev = resolve_device(device)
    was_training = network.training
    network.eval()
    x = torch.as_tensor(image)[None].float().to(dev)
    try:
        with torch.autocast("cuda", enabled=amp_enabled(amp, dev)):
            out = (inferer or SimpleInferer())(x, network)
    finally:
        network.train(was_training)
    return torch.as_tensor(out).float().cpu()


def predict_labels(network: torch.nn.Module, image: torch.Tensor, inferer: Inferer | None = None,
                   device: Any = None, amp: Any = True) -> torch.Tensor:
    """The argmax label map (spatial shape of ``image``) of ``predict``."""
    return predict(network, image, inferer, device, amp).argmax(1)[0]


def predict_slicewise(network: torch.nn.Module, image: torch.Tensor, axis: int = 2,
                      size: Sequence[int] | None = (256, 256), batch_size: int = 8, device: Any = "cpu") -> torch.Tensor:
    """The (X, Y, Z) argmax label map of a 2D segmentor run slice by slice over a (C, X, Y, Z) volume, each slice
    prepared as in training (``SlicewiseInferer``), at the volume's own size."""
    return predict_labels(network, image, SlicewiseInferer(size, axis, batch_size), device)


class SlicewiseSegmentation:
    """The 2D bundles' inference (P3, P4, P5) as MONAI Label and ``inference.yaml`` read it: ``preprocessing()``
    loads and checks an image and scales it to [-1, 1] per volume (as training does), ``inferer()`` runs the 2D
    network slice by slice (``SlicewiseInferer``), ``postprocessing()`` takes the argmax, optionally keeps the
    largest connected component (P5) and writes ``<case>_seg.nii.gz`` into ``output_dir``.

    Args:
        image_size: in-plane size the network was trained at (``None``: slices keep their size).
        slice_axis, batch_size: of ``SlicewiseInferer``.
        window, overlap: the crop size the network was trained on (``crop_size``): each slice segmented by
            sliding windows of it with this overlap.
        num_classes: the network's output classes (labels 1 .. num_classes - 1 are foreground).
        keep_largest: keep only the largest connected component of each foreground label.
        output_dir: where the segmentations go (``None``: nothing is written); ``postprocessing`` writes them into a
            staging folder that ``outputs()`` (an evaluator handler) commits when every input succeeded.
        spatial_dims: of the input images (3: volumes segmented slice by slice; 2: 2D images).
    """

    def __init__(self, image_size: Sequence[int] | None = (256, 256), slice_axis: int = 2, batch_size: int = 16,
                 num_classes: int = 2, keep_largest: Any = True, output_dir: str | None = None,
                 spatial_dims: int | None = None, window: Sequence[int] | None = None, overlap: float = 0.25):
        self.image_size = list(image_size) if image_size else None
        self.window, self.overlap = (list(window) if window else None), float(overlap)
        self.slice_axis, self.batch_size = int(slice_axis), int(batch_size)
        self.num_classes, self.keep_largest, self.output_dir = int(num_classes), as_bool(keep_largest), output_dir
        self.spatial_dims = int(spatial_dims) if spatial_dims is not None else len(image_size or (0, 0)) + 1

    def preprocessing(self) -> Compose:
        return Compose([LoadImaged(keys="image", image_only=True, ensure_channel_first=True),
                        ValidateVolumed(keys="image", label_key=None, spatial_dims=self.spatial_dims),
                        ScaleToUnitRanged(keys="image")])

    def inferer(self) -> SlicewiseInferer:
        return SlicewiseInferer(self.image_size, self.slice_axis, self.batch_size, self.window, self.overlap)

    def postprocessing(self) -> Compose:
        xforms: list = [AsDiscreted(keys="pred", argmax=True)]
        if self.keep_largest:
            xforms.append(KeepLargestConnectedComponentd(keys="pred", applied_labels=list(range(1, self.num_classes))))
        if self.output_dir is not None:
            xforms.append(SaveImaged(keys="pred", output_dir=str(self.staging), output_postfix="seg",
                                     separate_folder=False, resample=False, output_dtype=torch.uint8,
                                     print_log=False))
        return Compose(xforms)

    @property
    def staging(self) -> Path:
        """Where ``postprocessing`` writes before the run commits (``outputs()``)."""
        return Path(self.output_dir) / ".staging-segmentations"

    def outputs(self) -> StagedOutputs:
        """The evaluator handler that moves the segmentations into ``output_dir`` when every input succeeded."""
        return StagedOutputs(self.staging, self.output_dir)
