"""Evaluation: the downstream segmentor, metrics (thin over ``monai.metrics``), each paper's scores, the comparison
harness with its method registry, and the one report writer."""

from volgan.evaluation.gan_stopping import GanQualityStopping, SynthesisQualityEvaluator
from volgan.evaluation.harness import (
    budget_overrides,
    bundle_learning_curve,
    compare_bundle_settings,
    compare_cycleshape,
    compare_segmentation,
    evaluate_bundle,
    learning_curve,
    learning_curve_over,
    train_synthesis_pools,
    trained_gan_curves,
)
from volgan.evaluation.metrics import (
    BRATS_REGIONS,
    MeanForegroundDice,
    dice_paper,
    feature_distances,
    mean_foreground_dice,
    region_dice,
    region_hd95,
    segmentor_features,
)
from volgan.evaluation.quality import PairQuality, intensity_distance, normalised_cross_correlation, pair_quality
from volgan.evaluation.registry import CYCLESHAPE_MODES, METHODS, SEGMENTATION_SETTINGS, MethodEntry
from volgan.evaluation.report import aggregate, format_table, summarise, write_report, write_stopping_curves
from volgan.evaluation.scores import (
    cycle_shape_scores,
    generation_distances,
    mmgan_synthesis_quality,
    slicewise_dice,
    synthesis_quality,
)
from volgan.evaluation.seams import seam_index, tile_borders, window_borders
from volgan.evaluation.segmentor import evaluate_segmentor, evaluation_unet, train_segmentor

__all__ = [
    "compare_bundle_settings", "compare_cycleshape", "compare_segmentation", "evaluate_bundle", "learning_curve",
    "bundle_learning_curve", "learning_curve_over", "train_synthesis_pools", "budget_overrides", "trained_gan_curves",
    "BRATS_REGIONS", "MeanForegroundDice", "dice_paper", "feature_distances", "mean_foreground_dice", "region_dice",
    "region_hd95", "segmentor_features",
    "CYCLESHAPE_MODES", "METHODS", "SEGMENTATION_SETTINGS", "MethodEntry",
    "aggregate", "format_table", "summarise", "write_report", "write_stopping_curves",
    "cycle_shape_scores", "generation_distances", "mmgan_synthesis_quality", "slicewise_dice", "synthesis_quality",
    "evaluate_segmentor", "evaluation_unet", "train_segmentor",
    "seam_index", "tile_borders", "window_borders",
    "GanQualityStopping", "SynthesisQualityEvaluator",
    "PairQuality", "pair_quality", "intensity_distance", "normalised_cross_correlation",
]
