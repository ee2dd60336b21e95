"""Metrics the papers report, as thin wrappers over ``monai.metrics`` where MONAI has them: Dice as MM-GAN defines it,
per region and as a mean over foreground classes (also as a MONAI metric, so training-time validation and the
final evaluation compute the same number), HD95, and feature distances (FID, MMD) with an offline extractor."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric, FIDMetric, MMDMetric, compute_hausdorff_distance
from monai.networks.layers.simplelayers import SkipConnection

from volgan.config import resolve_device
from volgan.data.pairs import to_pair
from volgan.io import load_weights

__all__ = ["BRATS_REGIONS", "dice_paper", "region_dice", "region_hd95", "foreground_regions", "mean_foreground_dice",
           "MeanForegroundDice", "feature_distances", "PooledFeatures", "segmentor_features", "unet_bottom_layer",
           "conditional_generation_distances", "SEGMENTOR_FEATURES"]

#: BraTS evaluation regions (MM-GAN Table I): whole tumour, tumour core, enhancing tumour, and single labels.
BRATS_REGIONS: dict[str, tuple[int, ...]] = {
    "NCR(1)": (1,),
    "ED(2)": (2,),
    "ET(4)": (4,),
    "WT": (1, 2, 4),
    "TC": (1, 4),
}


def dice_paper(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray, empty: float = float("nan")) -> float:
    """MM-GAN's Dice (Eq. 3): ``2 |x . y| / (|x|^2 + |y|^2)``, for binary masks or soft maps in [0, 1].

    For binary masks it equals the usual Dice (``monai.metrics.compute_dice``). Both empty -> ``empty``.
    """
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double().flatten()
    yt = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).double().flatten()
    denom = float((xt * xt).sum() + (yt * yt).sum())
    if denom == 0:
        return empty
    return float(2.0 * (xt * yt).sum() / denom)


def region_dice(pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray,
                regions: Mapping[str, Sequence[int]] = BRATS_REGIONS) -> dict[str, float]:
    """Dice per region (a region = a set of label values) between two integer label maps of the same shape."""
    p = torch.as_tensor(np.asarray(pred)).long()
    t = torch.as_tensor(np.asarray(target)).long()
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {tuple(p.shape)} != target shape {tuple(t.shape)}")
    out = {}
    for name, labels in regions.items():
        lab = torch.tensor(list(labels))
        out[name] = dice_paper(torch.isin(p, lab), torch.isin(t, lab))
    return out


def region_hd95(pred: torch.Tensor, target: torch.Tensor, regions: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """95th-percentile Hausdorff distance (voxels, MONAI) per region, as ``"HD95 <region>"``; NaN when the region
    is absent in either."""
    out = {}
    for name, values in regions.items():
        v = torch.as_tensor(list(values))
        p, t = torch.isin(torch.as_tensor(pred), v), torch.isin(torch.as_tensor(target), v)
        ok = bool(p.any()) and bool(t.any())
        out[f"HD95 {name}"] = (float(compute_hausdorff_distance(p[None, None].float(), t[None, None].float(),
                                                                percentile=95)[0, 0]) if ok else float("nan"))
    return out


def foreground_regions(num_classes: int) -> dict[str, tuple[int]]:
    """``{"class k": (k,)}`` for k = 1 .. num_classes - 1 (the shared label space of P2)."""
    return {f"class {k}": (k,) for k in range(1, int(num_classes))}


def mean_foreground_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over the foreground classes of two label maps, classes absent in both skipped (P2's S-score and
    segmentation Dice, Sec. 4.2); NaN when no class is present in either."""
    vals = [v for v in region_dice(pred, target, foreground_regions(num_classes)).values() if not np.isnan(v)]
    return float(sum(vals) / len(vals)) if vals else float("nan")


class MeanForegroundDice(CumulativeIterationMetric):
    """``mean_foreground_dice`` as a MONAI metric (inputs: logits or label maps, targets: label maps with a channel
    dim), so that validation during training (``IgniteMetricHandler(metric_fn=...)``) and the evaluation compute
    the same S-score; ``aggregate`` is the mean over cases (NaN cases skipped)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = int(num_classes)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        pred = y_pred.argmax(1) if y_pred.shape[1] > 1 else y_pred[:, 0]
        vals = [mean_foreground_dice(p, t[0], self.num_classes) for p, t in zip(pred.long(), y.long())]
        return torch.tensor(vals, dtype=torch.float32)[:, None]

    def aggregate(self) -> torch.Tensor:
        data = self.get_buffer()
        vals = data[~torch.isnan(data)] if isinstance(data, torch.Tensor) else torch.zeros(0)
        return vals.mean() if vals.numel() else torch.tensor(float("nan"))


#: what ``segmentor_features`` computes, for reports
SEGMENTOR_FEATURES = ("global average over positions of the output of the segmentor U-Net's bottom (deepest) layer, "
                      "on the image channel in [-1, 1]: one value per bottom-layer channel")


def _stack(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.stack([torch.as_tensor(t) for t in x])


@torch.no_grad()
def _features(images: torch.Tensor, extractor: Callable, batch_size: int) -> torch.Tensor:
    feats = [torch.as_tensor(extractor(images[i:i + batch_size])).detach().float().cpu()
             for i in range(0, images.shape[0], batch_size)]
    f = torch.cat(feats) if feats else torch.zeros(0, 0)
    if f.ndim != 2:
        raise ValueError(f"the feature extractor must return (N, F) features, got shape {tuple(f.shape)}")
    return f


def feature_distances(real: Any, fake: Any, extractor: Callable, batch_size: int = 32) -> dict[str, float]:
    """Distances between the feature distributions of real and generated images (P4 Sec. III-A evaluates with FID).

    FID (``monai.metrics.FIDMetric``: Frechet distance of Gaussians fitted to the features) and MMD
    (``monai.metrics.MMDMetric``: unbiased squared MMD with a linear kernel on the features, i.e. the squared
    distance of the feature means without the self-similarity bias; it can be slightly negative). Inception v3
    weights, which FID proper uses, cannot be downloaded here: ``extractor`` is any callable images -> (N, F)
    features (e.g. ``segmentor_features``); report which. FID needs more images than features to be stable (P4's
    caveat: prefer MMD on few samples). MMD takes equal numbers: the first ``min(n_real, n_fake)`` of each.

    Args:
        real, fake: (N, C, ...) tensors, or sequences of (C, ...) images (at least 2 each).
        extractor: images (B, C, ...) -> (B, F); called without gradients, ``batch_size`` images at a time.

    Returns:
        ``{"fid", "mmd", "n_real", "n_fake", "n_features"}``.
    """
    fr, ff = _features(_stack(real), extractor, batch_size), _features(_stack(fake), extractor, batch_size)
    if len(fr) < 2 or len(ff) < 2:
        raise ValueError(f"need at least 2 real and 2 generated images, got {len(fr)} and {len(ff)}")
    if fr.shape[1] != ff.shape[1]:
        raise ValueError(f"feature sizes differ: {fr.shape[1]} (real) and {ff.shape[1]} (generated)")
    n = min(len(fr), len(ff))
    return {"fid": float(FIDMetric()(ff, fr)), "mmd": float(MMDMetric()(fr[:n], ff[:n])), "n_real": len(fr),
            "n_fake": len(ff), "n_features": int(fr.shape[1])}


def unet_bottom_layer(network: torch.nn.Module) -> torch.nn.Module:
    """The bottom (deepest, after the last down-sampling) layer of a ``monai.networks.nets.UNet``."""
    net = network.module if hasattr(network, "module") else network
    m = getattr(net, "model", None)
    if m is None:
        raise ValueError(f"{type(net).__name__} is not a MONAI UNet: name the feature layer explicitly")
    while isinstance(m, torch.nn.Sequential):
        skip = next((c for c in m.children() if isinstance(c, SkipConnection)), None)
        if skip is None:
            break
        m = skip.submodule
    return m


class PooledFeatures(torch.nn.Module):
    """images -> (N, C) features: the global average over positions of the output of one layer of ``network``
    (captured by a forward hook while ``network`` runs). ``layer``: a submodule, its name in
    ``network.named_modules()``, or ``None`` for a MONAI UNet's bottom layer (``unet_bottom_layer``)."""

    def __init__(self, network: torch.nn.Module, layer: torch.nn.Module | str | None = None):
        super().__init__()
        self.network = network
        if layer is None:
            layer = unet_bottom_layer(network)
        elif isinstance(layer, str):
            modules = dict(network.named_modules())
            if layer not in modules:
                raise ValueError(f"no layer {layer!r} in {type(network).__name__}")
            layer = modules[layer]
        self.layer = layer

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []
        hook = self.layer.register_forward_hook(lambda m, i, o: captured.append(o))
        try:
            self.network(images.to(next(self.network.parameters()).device))
        finally:
            hook.remove()
        return captured[-1].float().flatten(2).mean(2)


def segmentor_features(network: torch.nn.Module, ckpt_path: str | None = None, device: Any = None,
                       layer: torch.nn.Module | str | None = None) -> PooledFeatures:
    """The default extractor of ``feature_distances`` that needs no download: ``PooledFeatures`` of a segmentor
    trained on the data (weights from ``ckpt_path``), in eval mode; for a MONAI UNet the features are
    ``SEGMENTOR_FEATURES``."""
    dev = resolve_device(device)
    net = network.to(dev)
    if ckpt_path is not None:
        load_weights(net, ckpt_path, dev)
    return PooledFeatures(net.eval(), layer).eval()


@torch.no_grad()
def conditional_generation_distances(slices: Sequence[Mapping[str, Any]], generator: torch.nn.Module,
                                     extractor: Callable, gen_ckpt_path: str | None = None, seed: int = 0,
                                     batch_size: int = 16, latent_dim: int | None = None,
                                     features: str = SEGMENTOR_FEATURES) -> dict[str, Any]:
    """``feature_distances`` between the real foreground slices and one ``G(x_j, z)`` per slice, ``x_j`` = that
    slice (P4 Sec. III-A: FID of generated vs real images). The extractor sees the image channel only. Also
    reports the mean absolute image difference between ``x_g`` and its source ``x_j`` (a copying check) and the
    foreground fractions of the real and the generated (thresholded at 0) masks.

    Args:
        slices: items with "image" (1, H, W) in [-1, 1] and "label" (binary mask), e.g. a ``SliceDataset``;
            slices without foreground are skipped (G is trained on foreground slices).
        generator: a conditional generator ``G(x_j, z)`` (``AdversarialUNetGenerator``); run in eval mode with
            the weights of ``gen_ckpt_path`` when given.
        extractor: images -> (N, F) features.
        seed: seed of ``z``.
        features: description of the features, copied into the result.
    """
    dev = next(generator.parameters()).device
    if gen_ckpt_path is not None:
        load_weights(generator, gen_ckpt_path, dev)
    generator.eval()
    latent = int(latent_dim or generator.latent_dim)
    items = [slices[k] for k in range(len(slices))]
    items = [it for it in items if bool((torch.as_tensor(it["label"]) > 0).any())]
    if len(items) < 2:
        raise ValueError(f"need at least 2 slices with foreground, got {len(items)}")
    noise = torch.Generator().manual_seed(int(seed))
    real = torch.stack([torch.as_tensor(it["image"]).float() for it in items])
    masks = torch.stack([torch.as_tensor(it["label"]) for it in items])
    fake = []
    for i in range(0, len(items), batch_size):
        x_j = to_pair(real[i:i + batch_size], masks[i:i + batch_size]).to(dev)
        z = torch.randn(x_j.shape[0], latent, generator=noise)
        fake.append(generator(x_j, z.to(dev)).float().cpu())
    fake_pairs = torch.cat(fake)
    out = feature_distances(real, fake_pairs[:, :-1], extractor, batch_size)
    out.update({"l1_to_source": float((fake_pairs[:, :-1] - real).abs().mean()),
                "foreground_fraction_real": float((masks > 0).float().mean()),
                "foreground_fraction_generated": float((fake_pairs[:, -1:] > 0).float().mean()),
                "features": features})
    return out
