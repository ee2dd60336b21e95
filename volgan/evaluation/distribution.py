"""How far a synthetic set is from the real one, offline (issue #19): the distribution metrics the field reports,
with feature extractors that need no download (Inception weights cannot be fetched).

- 2.5D FID and MMD: axial, coronal and sagittal slices through the foreground of every volume (2D images: the image),
  embedded by ``RandomConvFeatures`` (a seeded random-weight CNN; random features are a known offline stand-in for
  Inception, and distances compare only within one extractor and seed) or by a 2D segmentor trained on the real
  data (``PooledFeatures`` of its bottom layer). FID: ``monai.metrics.FIDMetric`` on features z-scored by the two
  sets pooled (as FRD's, so neither depends on a feature's scale); MMD: a Gaussian-kernel MMD^2
  (biased estimate: 0 for identical sets) with the median-distance bandwidth.
- MS-SSIM diversity (``monai.metrics.MultiScaleSSIMMetric``): mean MS-SSIM over pairs of synthetic volumes, and over
  pairs of real ones; synthetic higher than real means less diverse (mode collapse; copies give 1).
- FRD, the radiomics Frechet distance (Osuala et al. 2024): Frechet distance of radiomics features of the images
  inside their label maps; features from pyradiomics when installed
  (first order, GLCM, GLRLM, GLSZM), else volgan's first-order and GLCM (scikit-image) features (reported).

Every metric is also computed between two halves of the real set (when it has four or more cases): the noise floor
a synthetic set is to be read against.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from monai.metrics import FIDMetric, MultiScaleSSIMMetric
from scipy import stats
from skimage.feature import graycomatrix, graycoprops

from volgan.data.datalist import load_datalist
from volgan.data.validate import validate_datalist
from volgan.errors import VolganConfigError, VolganDataError
from volgan.evaluation.metrics import PooledFeatures
from volgan.evaluation.quality import foreground_zscores
from volgan.io import atomic_write_json
from volgan.networks.definition import load_network

__all__ = ["normalised_volume", "planes_25d", "RandomConvFeatures", "gaussian_mmd", "frechet_distance",
           "ms_ssim_diversity", "radiomics_features", "radiomics_backend", "distribution_metrics", "quality_report",
           "PLANE_NAMES"]

PLANE_NAMES = ("sagittal", "coronal", "axial")  # slices orthogonal to axis 0, 1, 2 of RAS (X, Y, Z) volumes


def normalised_volume(image: Any, label: Any) -> tuple[np.ndarray, np.ndarray]:
    """(image, label): z-scored inside ``label > 0``, / 3 and clipped to [-1, 1], background -1 (the convention of
    volgan's generators and segmentors), so real and synthetic sets compare whatever their intensity scales."""
    z, y = foreground_zscores(image, label)
    return np.where(y > 0, np.clip(z / 3.0, -1, 1), -1.0).astype(np.float32), y


def planes_25d(volume: np.ndarray, label: np.ndarray, per_axis: int = 16, size: int = 64) -> dict[str, torch.Tensor]:
    """Per plane, ``per_axis`` slices (1, size, size) evenly spaced over the slices that contain foreground (a 2D
    image: itself, under ``"slice"``)."""
    v = torch.as_tensor(volume)
    if v.ndim == 2:
        return {"slice": torch.nn.functional.interpolate(v[None, None], size=(size, size), mode="bilinear")}
    out = {}
    for axis, name in enumerate(PLANE_NAMES):
        has = np.nonzero(np.moveaxis(label > 0, axis, 0).reshape(label.shape[axis], -1).any(1))[0]
        idx = np.unique(np.linspace(has[0], has[-1], int(per_axis)).round().astype(int)) if len(has) else []
        sl = torch.stack([v.select(axis, int(i)) for i in idx])[:, None]
        out[name] = torch.nn.functional.interpolate(sl, size=(size, size), mode="bilinear", align_corners=False)
    return out


class RandomConvFeatures(torch.nn.Module):
    """A seeded random-weight 2D CNN: four (conv 3x3, LeakyReLU, 2x2 average pool) stages, then per channel the mean
    and standard deviation over positions: (N, 2 * width) features of (N, 1, H, W) images. Frozen; the same seed
    gives the same extractor on every machine."""

    def __init__(self, seed: int = 0, width: int = 16, in_channels: int = 1):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        layers, c = [], in_channels
        for w in (width // 2, width, width, width):
            conv = torch.nn.Conv2d(c, w, 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (9 * c)) ** 0.5)
                conv.bias.zero_()
            layers += [conv, torch.nn.LeakyReLU(0.2), torch.nn.AvgPool2d(2)]
            c = w
        self.body = torch.nn.Sequential(*layers).requires_grad_(False).eval()
        self.seed, self.width = int(seed), int(width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        f = self.body(images.float()).flatten(2)
        return torch.cat([f.mean(2), f.std(2)], 1)


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor) -> float:
    """Squared MMD with a Gaussian kernel (bandwidth: the median pairwise distance of the pooled features), biased
    estimate: exactly 0 when the two sets are the same."""
    x, y = x.double(), y.double()
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    sigma2 = float(d2[d2 > 0].median()) if bool((d2 > 0).any()) else 1.0
    k = torch.exp(-d2 / (2 * sigma2))
    n = len(x)
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


def frechet_distance(x: torch.Tensor, y: torch.Tensor, standardise: bool = True) -> float:
    """Frechet distance of Gaussians fitted to two feature sets (``monai.metrics.FIDMetric``); with ``standardise``
    each feature is first z-scored by the two sets pooled (features constant in both dropped), so the value does not
    depend on the extractor's feature scale and no single feature dominates."""
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    x, y = x.double(), y.double()
    if standardise:
        both = torch.cat([x, y])
        mu, sd = both.mean(0), both.std(0)
        keep = torch.isfinite(sd) & (sd > 0)
        x, y = (x[:, keep] - mu[keep]) / sd[keep], (y[:, keep] - mu[keep]) / sd[keep]
        if x.shape[1] == 0:
            return 0.0
    return max(float(FIDMetric()(y, x)), 0.0)


def ms_ssim_diversity(volumes: Sequence[np.ndarray], max_pairs: int = 50, size: int = 64, seed: int = 0) -> float:
    """Mean MS-SSIM over (at most ``max_pairs``, seeded) pairs of ``volumes`` (normalised, [-1, 1]) resized to
    ``size`` per axis; NaN for fewer than two volumes. 1: all the same."""
    if len(volumes) < 2:
        return float("nan")
    nd = volumes[0].ndim
    thumbs = [torch.nn.functional.interpolate(torch.as_tensor(v)[None, None], size=(size,) * nd,
                                              mode="trilinear" if nd == 3 else "bilinear", align_corners=False)
              for v in volumes]
    pairs = [(i, j) for i in range(len(thumbs)) for j in range(i + 1, len(thumbs))]
    if len(pairs) > max_pairs:
        pick = np.random.RandomState(seed).choice(len(pairs), max_pairs, replace=False)
        pairs = [pairs[k] for k in sorted(pick)]
    metric = MultiScaleSSIMMetric(nd, data_range=2.0, kernel_size=3)
    a = torch.cat([thumbs[i] for i, _ in pairs]) + 1
    b = torch.cat([thumbs[j] for _, j in pairs]) + 1
    return float(metric(a, b).mean())


def radiomics_backend() -> str:
    """``"pyradiomics <version>"`` when pyradiomics imports, else ``"volgan"`` (first order + GLCM, scikit-image)."""
    try:
        import radiomics  # noqa: PLC0415 - optional dependency, imported where it is used

        return f"pyradiomics {radiomics.__version__}"
    except ImportError:
        return "volgan"


def _volgan_radiomics(z: np.ndarray, fg: np.ndarray) -> dict[str, float]:
    v = z[fg]
    hist = np.histogram(np.clip(v, -3, 3), bins=32, range=(-3, 3))[0] / max(v.size, 1)
    nz = hist[hist > 0]
    feats = {"firstorder_skewness": float(stats.skew(v)), "firstorder_kurtosis": float(stats.kurtosis(v)),
             "firstorder_p10": float(np.percentile(v, 10)), "firstorder_p90": float(np.percentile(v, 90)),
             "firstorder_iqr": float(np.subtract(*np.percentile(v, [75, 25]))),
             "firstorder_entropy": float(-(nz * np.log2(nz)).sum()), "firstorder_uniformity": float((hist ** 2).sum())}
    q = np.where(fg, np.clip(((z + 3) / 6 * 31).round(), 0, 31) + 1, 0).astype(np.uint8)  # 0: outside the mask
    planes = [q] if q.ndim == 2 else []
    if q.ndim == 3:
        centre = np.argwhere(fg).mean(0).round().astype(int)
        planes = [np.take(q, centre[a], axis=a) for a in range(3)]
    props = {p: [] for p in ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")}
    for plane in planes:
        m = graycomatrix(plane, [1], [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=33, symmetric=True)
        m[0, :, :, :] = 0  # pairs with an outside voxel do not count
        m[:, 0, :, :] = 0
        if m.sum() == 0:
            continue
        for p in props:
            props[p].append(float(np.nan_to_num(graycoprops(m.astype(np.float64), p)).mean()))
    feats.update({f"glcm_{p}": float(np.mean(v)) if v else float("nan") for p, v in props.items()})
    return feats


def radiomics_features(volume: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """Radiomics features of the image (z-scored inside the label map) inside ``label > 0`` (``radiomics_backend``)."""
    z = np.where(label > 0, volume * 3.0, 0.0)  # back to z-scores (clipped at 3)
    fg = label > 0
    if radiomics_backend() == "volgan":
        return _volgan_radiomics(z, fg)
    from radiomics import featureextractor  # noqa: PLC0415 - optional dependency

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    ex = featureextractor.RadiomicsFeatureExtractor(binWidth=0.25, force2D=z.ndim == 2)
    ex.disableAllFeatures()
    for cls in ("firstorder", "glcm", "glrlm", "glszm"):
        ex.enableFeatureClassByName(cls)
    arr = z if z.ndim == 3 else z[None]
    msk = fg if fg.ndim == 3 else fg[None]
    res = ex.execute(sitk.GetImageFromArray(arr.astype(np.float32)), sitk.GetImageFromArray(msk.astype(np.uint8)))
    return {k: float(v) for k, v in res.items() if not k.startswith("diagnostics")}


def _frd(real: list[dict[str, float]], synth: list[dict[str, float]]) -> float:
    keys = sorted(set(real[0]) & set(synth[0]))
    r = torch.tensor([[f[k] for k in keys] for f in real], dtype=torch.float64)
    s = torch.tensor([[f[k] for k in keys] for f in synth], dtype=torch.float64)
    ok = torch.isfinite(r).all(0) & torch.isfinite(s).all(0)
    return frechet_distance(r[:, ok], s[:, ok])


def _load_set(source: Any, what: str, label_values: Sequence[int] | None, spatial_dims: int = 3) -> list[dict]:
    items = load_datalist(source) if isinstance(source, (str, os.PathLike)) else [dict(i) for i in source]
    if not items:
        raise VolganDataError(str(source), f"no (image, label) pairs in the {what} set")
    missing = next((it for it in items if not it.get("label")), None)
    if missing is not None:
        raise VolganDataError(str(missing.get("image", source)), f"{what} image without a label map: the metrics "
                              "are computed inside the label maps")
    return validate_datalist(items, label_values=label_values, spatial_dims=spatial_dims)


def _features(vols: Sequence[tuple[np.ndarray, np.ndarray]], extractor: Callable) -> dict[str, list[torch.Tensor]]:
    """Per plane, one (slices, F) feature tensor per volume (in order)."""
    per_plane: dict[str, list[torch.Tensor]] = {}
    with torch.no_grad():
        for vol, lab in vols:
            for plane, slices in planes_25d(vol, lab).items():
                per_plane.setdefault(plane, []).append(torch.as_tensor(extractor(slices)).float().cpu())
    return per_plane


def _pick(per_plane: Mapping[str, list[torch.Tensor]], cases: Sequence[int]) -> dict[str, torch.Tensor]:
    """The features of ``cases``, concatenated per plane."""
    return {p: torch.cat([f[c] for c in cases]) for p, f in per_plane.items()}


def distribution_metrics(real: Any, synthetic: Any, extractor: Callable | None = None, segmentor: Any = None,
                         label_values: Sequence[int] | None = None, radiomics: bool = True, seed: int = 0,
                         features: str | None = None, spatial_dims: int = 3) -> dict[str, Any]:
    """FID and MMD per plane (and their mean over planes), MS-SSIM diversity and FRD of ``synthetic`` against
    ``real`` (datalists, folders or lists of (image, label) pairs), with the same metrics between two halves of the
    real set (``"real half vs half"``, with four or more real cases) as the noise floor. ``spatial_dims=2``: 2D
    images (the 2D methods' slices), each one plane.

    ``extractor``: images (N, 1, H, W) in [-1, 1] -> (N, F); default: ``PooledFeatures`` of ``segmentor`` (a 2D
    segmentor ``model.pt`` with its ``model.json``) when given, else ``RandomConvFeatures(seed)``."""
    r_items = _load_set(real, "real", label_values, spatial_dims)
    s_items = _load_set(synthetic, "synthetic", label_values, spatial_dims)
    if extractor is None and segmentor is not None:
        net = load_network(segmentor, "cpu")
        if getattr(net, "definition", {}).get("spatial_dims", 2) != 2:
            raise VolganConfigError(f"{segmentor}: a 3D segmentor; the 2.5D metrics need a 2D one (or none)")
        extractor = PooledFeatures(net, None if hasattr(net, "model") else "encoder")
        features = features or f"PooledFeatures of the segmentor {segmentor}"
    if extractor is None:
        extractor = RandomConvFeatures(seed)
        features = features or f"RandomConvFeatures(seed={seed}, width=16): a seeded random-weight 2D CNN"
    r_vols = [normalised_volume(it["image"], it["label"]) for it in r_items]
    s_vols = [normalised_volume(it["image"], it["label"]) for it in s_items]
    real_f, synth_f = _features(r_vols, extractor), _features(s_vols, extractor)
    real_r = [radiomics_features(v, y) for v, y in r_vols] if radiomics else None
    synth_r = [radiomics_features(v, y) for v, y in s_vols] if radiomics else None
    all_real, all_synth = list(range(len(r_vols))), list(range(len(s_vols)))
    # (features, radiomics) of the two sets each comparison sets against each other
    comparisons = {"synthetic vs real": ((_pick(real_f, all_real), real_r), (_pick(synth_f, all_synth), synth_r))}
    if len(r_vols) >= 4:  # the noise floor: two halves of the real cases
        perm = np.random.RandomState(seed).permutation(len(r_vols))
        ia, ib = list(perm[: len(r_vols) // 2]), list(perm[len(r_vols) // 2:])
        comparisons["real half vs half"] = tuple(
            (_pick(real_f, idx), [real_r[i] for i in idx] if real_r else None) for idx in (ia, ib))
    rows: dict[str, dict[str, float]] = {}
    for name, ((fa, ra), (fb, rb)) in comparisons.items():
        row = {}
        for plane in fa:
            row[f"FID {plane}"] = frechet_distance(fa[plane], fb[plane])
            row[f"MMD {plane}"] = gaussian_mmd(fa[plane], fb[plane])
        row["FID 2.5D (mean over planes)"] = float(np.mean([row[f"FID {p}"] for p in fa]))
        row["MMD 2.5D (mean over planes)"] = float(np.mean([row[f"MMD {p}"] for p in fa]))
        if name == "synthetic vs real":  # diversity: within each set (copies / mode collapse: towards 1)
            row["MS-SSIM among synthetic"] = ms_ssim_diversity([v for v, _ in s_vols], seed=seed)
            row["MS-SSIM among real"] = ms_ssim_diversity([v for v, _ in r_vols], seed=seed)
        if radiomics:
            row["FRD"] = _frd(ra, rb)
        rows[name] = row
    return {"rows": rows, "n_real": len(r_vols), "n_synthetic": len(s_vols), "features": features,
            "radiomics": radiomics_backend() if radiomics else None, "seed": int(seed)}


def quality_report(result: Mapping[str, Any], output_dir: str | os.PathLike) -> str:
    """Write ``quality_metrics.json`` and ``quality_metrics.png`` in ``output_dir``; returns the Markdown table."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = list(result["rows"])
    metrics = list(result["rows"][names[0]])
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    lines += [f"| {m} | " + " | ".join(f"{result['rows'][n][m]:.4g}" if m in result["rows"][n] else ""
                                       for n in names) + " |" for m in metrics]
    table = "\n".join(lines)
    atomic_write_json(out / "quality_metrics.json", {**result, "table": table})
    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    groups = (("FID", [m for m in metrics if m.startswith("FID") and "mean" not in m]),
              ("MMD", [m for m in metrics if m.startswith("MMD") and "mean" not in m]),
              ("MS-SSIM / FRD", [m for m in metrics if m.startswith("MS-SSIM") or m == "FRD"]))
    for k, (title, ms) in enumerate(groups):
        ax = fig.add_subplot(1, 3, k + 1)
        x = np.arange(len(ms))
        for i, n in enumerate(names):
            ax.bar(x + i * 0.8 / len(names), [result["rows"][n].get(m, np.nan) for m in ms], 0.8 / len(names), label=n)
        ax.set_xticks(x + 0.4 - 0.4 / len(names))
        ax.set_xticklabels([m.replace(" (", "\n(") for m in ms], fontsize=6, rotation=20)
        ax.set_title(title, fontsize=9)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"{result['n_synthetic']} synthetic vs {result['n_real']} real; features: "
                 f"{str(result['features'])[:70]}", fontsize=8)
    fig.tight_layout()
    fig.savefig(str(out / "quality_metrics.png"), dpi=100)
    (out / "quality_metrics.md").write_text(table + "\n", encoding="utf-8")
    return table
