"""The downstream 3D segmentor the evaluation harness trains: on (image, label) pairs, Dice per region on whole
volumes. Used for MM-GAN's synthesis-quality measure (a real-trained segmentor on synthetic images, P1 Sec. V-B)
and for real-only vs real + synthetic comparisons. The network comes from ``volgan.networks.make_segmentor``, the
training from ``volgan.engines.SegmentorTrainer``, the prediction from ``volgan.inferers``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Events
from monai.data import CacheDataset, DataLoader
from monai.losses import DiceCELoss
from monai.transforms import (
    Compose,
    EnsureTyped,
    LoadImaged,
    MapLabelValued,
    Rand2DElasticd,
    Rand3DElasticd,
    RandAffined,
    RandCropByLabelClassesd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SpatialPadd,
)
from monai.utils import set_determinism

from volgan.config import resolve_device
from volgan.data.transforms import ForegroundNormalized
from volgan.data.validate import ValidateVolumed
from volgan.engines import SegmentorTrainer
from volgan.evaluation.metrics import BRATS_REGIONS, region_dice, region_hd95
from volgan.handlers import ProgressHandler
from volgan.inferers import SEGMENTATION_PADDING, predict_labels, sliding_window_inferer
from volgan.networks import make_segmentor

__all__ = ["evaluation_unet", "segmentation_transforms", "train_segmentor", "predict_volume", "evaluate_segmentor"]

logger = logging.getLogger(__name__)

BACKGROUND = -1.5


def evaluation_unet(num_classes: int = 5, channels: Sequence[int] = (16, 32, 64, 128)) -> torch.nn.Module:
    """The harness's 3D segmentor: ``make_segmentor("unet")`` with one residual unit per level, instance norm."""
    return make_segmentor("unet", 3, 1, num_classes, channels, num_res_units=1, norm="instance")


def segmentation_transforms(label_values: Sequence[int] = (0, 1, 2, 3, 4), patch_size: Sequence[int] | None = None,
                            spatial_dims: int = 3, augment: bool = False) -> Compose:
    """Load, check, z-score inside the non-zero (brain) voxels; with ``patch_size`` add class-balanced crops; with
    ``augment`` (training only) the standard augmentation baseline of issue #20, P5's settings: intensity shift and
    scale by up to 0.05, translation by up to 4 voxels, elastic deformation (MONAI random transforms).

    Brain voxels map to [-1, 1] (z / 3, clipped) and background to -1.5, so the two never share a value
    (plain z-scores would put the background at the brain's mean).

    Label values are mapped to 0..K-1 (``label_values`` order). Real skull-stripped volumes and volgan's
    synthetic volumes (0 outside the brain) are normalised the same way.
    """
    label_values = list(label_values)
    xforms: list = [
        LoadImaged(keys=["image", "label"], image_only=True, ensure_channel_first=True),
        ValidateVolumed(keys="image", label_key="label", spatial_dims=spatial_dims, label_values=label_values),
        ForegroundNormalized(keys="image", label_key=None, z_range=3.0, background=BACKGROUND),
    ]
    if label_values != list(range(len(label_values))):
        xforms.append(MapLabelValued(keys="label", orig_labels=label_values, target_labels=list(range(len(label_values)))))
    xforms.append(EnsureTyped(keys=["image", "label"], track_meta=False))
    if patch_size is not None:
        k = len(label_values)
        xforms += [
            SpatialPadd(keys="image", spatial_size=list(patch_size), value=BACKGROUND),
            SpatialPadd(keys="label", spatial_size=list(patch_size)),
            RandCropByLabelClassesd(keys=["image", "label"], label_key="label", spatial_size=list(patch_size),
                                    num_classes=k, ratios=[0.5] + [1.0] * (k - 1), num_samples=2, warn=False),
        ]
    if augment:
        xforms += [
            RandShiftIntensityd(keys="image", offsets=0.05, prob=1.0),
            RandScaleIntensityd(keys="image", factors=0.05, prob=1.0),
            RandAffined(keys=["image", "label"], prob=0.5, translate_range=[4] * spatial_dims,
                        mode=("bilinear", "nearest"), padding_mode="border"),
            (Rand3DElasticd if spatial_dims == 3 else Rand2DElasticd)(
                keys=["image", "label"], prob=0.3, sigma_range=(5, 7), magnitude_range=(20, 40),
                mode=("bilinear", "nearest"), padding_mode="border", **({} if spatial_dims == 3 else {"spacing": 20})),
        ]
    return Compose(xforms)


def train_segmentor(
    train_items: Sequence[Mapping[str, Any]],
    label_values: Sequence[int] = (0, 1, 2, 3, 4),
    iterations: int = 200,
    patch_size: Sequence[int] = (32, 32, 32),
    batch_size: int = 2,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    channels: Sequence[int] = (16, 32, 64, 128),
    seed: int = 0,
    device: Any = None,
    amp: Any = True,
    progress: Any = "auto",
    desc: str | None = None,
    network: torch.nn.Module | None = None,
    augment: bool = False,
) -> torch.nn.Module:
    """Train a MONAI 3D U-Net with Dice+CE for a fixed number of ``iterations`` (same budget across settings).

    MM-GAN trains its evaluation U-Nets with Adam lr 2e-4, betas (0.5, 0.999) (Sec. V-B); those are the defaults.
    ``network``: continue training this network (fine-tuning after synthetic pre-training, Sec. V-D) instead of
    a new one. ``augment``: the standard augmentation baseline (``segmentation_transforms``).
    """
    set_determinism(seed=seed)
    device = resolve_device(device)
    net = (network if network is not None else evaluation_unet(len(label_values), channels)).to(device)
    pairs = [{"image": it["image"], "label": it["label"]} for it in train_items]  # extra keys may differ per source
    ds = CacheDataset(pairs, segmentation_transforms(label_values, patch_size, augment=augment), progress=False)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=0)
    epoch_length = min(len(loader), iterations)
    max_epochs = int(np.ceil(iterations / max(epoch_length, 1)))
    trainer = SegmentorTrainer(
        device=device, max_epochs=max_epochs, train_data_loader=loader, network=net,
        optimizer=torch.optim.Adam(net.parameters(), lr=lr, betas=betas),
        loss_function=DiceCELoss(to_onehot_y=True, softmax=True), epoch_length=epoch_length, amp=amp,
        train_handlers=[ProgressHandler(progress, desc=desc)],
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: e.terminate() if e.state.iteration >= iterations else None)
    trainer.run()
    set_determinism(seed=None)
    return net


def predict_volume(net: torch.nn.Module, image: torch.Tensor, roi_size: Sequence[int] = (64, 64, 64),
                   overlap: float = 0.5, device: Any = None, amp: Any = True) -> torch.Tensor:
    """Label map (argmax) of a channel-first image with gaussian-blended sliding windows (``volgan.inferers``)."""
    inferer = sliding_window_inferer(roi_size, 1, overlap, padding_mode=SEGMENTATION_PADDING)
    return predict_labels(net, image, inferer, device, amp)


def evaluate_segmentor(
    net: torch.nn.Module,
    items: Sequence[Mapping[str, Any]],
    label_values: Sequence[int] = (0, 1, 2, 3, 4),
    regions: Mapping[str, Sequence[int]] = BRATS_REGIONS,
    roi_size: Sequence[int] = (64, 64, 64),
    device: Any = None,
    hd95: bool = False,
) -> list[dict[str, float]]:
    """Dice per region (in original label values) for every case, on whole volumes; with ``hd95`` also the
    95th-percentile Hausdorff distance per region (``"HD95 <region>"``, voxels, MONAI; NaN when the region is
    absent in the prediction or the target)."""
    xf = segmentation_transforms(label_values, None)
    lv = torch.tensor(list(label_values))
    rows = []
    for item in items:
        d = xf(dict(item))
        pred = lv[predict_volume(net, d["image"], roi_size, device=device)]
        target = lv[torch.as_tensor(d["label"][0]).long()]
        row = {"case": str(item.get("case", item["image"])), **region_dice(pred, target, regions)}
        if hd95:
            row.update(region_hd95(pred, target, regions))
        rows.append(row)
    return rows
