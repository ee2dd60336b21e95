"""Seam-free whole-volume synthesis (issue #19): tiled synthesis equals one whole-volume pass of a trained
generator, with no step where tiles meet; the paper's per-window instance norm in MONAI's windows is the negative
case (visible seams, large differences)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_case
from volgan.engines import ConditionalGanTrainer, ImagePool
from volgan.errors import VolganConfigError
from volgan.evaluation import seam_index, tile_borders, window_borders
from volgan.inferers import TiledSynthesisInferer, sliding_window_inferer, synthesis_inferer
from volgan.networks import PatchDiscriminator, SNUNetGenerator, cycle_generator


def _one_hot(lab: np.ndarray) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(lab).long(), 5).permute(3, 0, 1, 2)[None].float()


def _trained(norm_stats: str, iterations: int = 24) -> SNUNetGenerator:
    """MM-GAN's generator trained briefly on 32^3 brain-like patches (real training, not random weights)."""
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    g = SNUNetGenerator(3, 5, 1, channels=(8, 16, 32, 64), norm_stats=norm_stats)
    d = PatchDiscriminator(3, 1, 5, channels=(8, 16, 16))
    data = []
    for _ in range(iterations):
        img, lab = tiny_case(rng, (32, 32, 32))
        img = img / max(img.max(), 1.0) * 2 - 1
        data.append({"cond": _one_hot(lab), "image": torch.as_tensor(img, dtype=torch.float32)[None, None]})
    og = torch.optim.Adam(g.parameters(), 4e-4, betas=(0.0, 0.9))
    od = torch.optim.Adam(d.parameters(), 1e-4, betas=(0.0, 0.9))
    ConditionalGanTrainer("cpu", 1, data, g, d, og, od, pool=ImagePool(4, seed=0), epoch_length=len(data)).run()
    return g.eval()


@pytest.fixture(scope="module")
def big_label_map():
    """A 72 x 64 x 48 label map (not a multiple of the tiles, nor of the generator's 8)."""
    _, lab = tiny_case(np.random.RandomState(3), (72, 64, 48))
    return lab


@pytest.mark.parametrize("make", [
    lambda: SNUNetGenerator(3, 5, 1, channels=(4, 8, 16, 32), norm_stats="running"),
    lambda: cycle_generator(3, 5, 1, channels=(4, 8, 16, 16), norm_stats="running"),
    lambda: SNUNetGenerator(2, 5, 1, channels=(4, 8, 16), norm_stats="running"),
], ids=["mmgan-3d", "cycleshape-3d", "mmgan-2d"])
def test_forward_tiled_equals_forward_for_any_tile(make):
    torch.manual_seed(0)
    g = make()
    shape = (1, 5, 37, 30, 21) if g.spatial_dims == 3 else (1, 5, 37, 30)
    g.train()
    for _ in range(2):  # running statistics that are not the initial ones
        g(torch.randn(shape))
    g.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        whole = g(x)
        for tile in (8, 13, 64):
            assert (g.forward_tiled(x, tile) - whole).abs().max() < 1e-5, tile


def test_tiled_synthesis_needs_fixed_statistics():
    g = SNUNetGenerator(3, 5, 1, channels=(4, 8), norm_stats="instance").eval()
    with pytest.raises(VolganConfigError, match="fixed statistics"):
        g.forward_tiled(torch.zeros(1, 5, 16, 16, 16), 8)
    assert isinstance(synthesis_inferer([16] * 3, 0.5, "running"), TiledSynthesisInferer)
    with pytest.raises(VolganConfigError, match="norm_stats"):
        synthesis_inferer([16] * 3, 0.5, "batch")


def test_trained_generator_tiles_equal_one_pass_and_show_no_seam(big_label_map):
    """A generator trained with volgan's default (instance norm in training, its running statistics at inference):
    32^3 tiles over a 72 x 64 x 48 map equal one pass to < 0.05 (here to float rounding) and the seam index across
    tile borders is <= 1.1."""
    g = _trained("running")
    x = _one_hot(big_label_map)
    brain = big_label_map > 0
    with torch.no_grad():
        whole = g(x)[0, 0]
        tiled = TiledSynthesisInferer([32, 32, 32])(x, g)[0, 0]
    assert float((tiled - whole).abs().max()) < 1e-4
    index = seam_index(tiled, tile_borders(tiled.shape, [32, 32, 32]), brain)
    assert index <= 1.1, index


def test_per_window_instance_norm_makes_seams(big_label_map):
    """The negative case: the paper's per-input instance norm in MONAI's windows (no overlap, no blending):
    each window is normalised by its own statistics, so windows differ from the whole pass and steps appear
    at their borders."""
    g = _trained("instance")
    x = _one_hot(big_label_map)
    brain = big_label_map > 0
    with torch.no_grad():
        whole = g(x)[0, 0]
        windowed = sliding_window_inferer([32, 32, 32], 1, 0.0, mode="constant")(x, g)[0, 0]
    assert float((windowed - whole).abs().max()) > 0.05
    index = seam_index(windowed, window_borders(windowed.shape, [32, 32, 32], 0.0), brain)
    assert index > 1.1, index


def test_seam_index_known_answers():
    rng = np.random.RandomState(0)
    smooth = rng.rand(40, 40, 20)
    borders = window_borders(smooth.shape, [16, 16, 16], 0.0)
    assert borders == [[16, 24, 32], [16, 24, 32], [4, 16]]  # MONAI aligns the last window to the end
    assert abs(seam_index(smooth, borders) - 1.0) < 0.05  # noise: a border step is like any other
    stepped = smooth.copy()
    stepped[16:32] += 2.0  # a window with another offset: large steps at x = 16 and 32 only
    assert seam_index(stepped, borders) > 1.5
    assert seam_index(smooth, [[], [], []]) == 1.0  # one window: no border
