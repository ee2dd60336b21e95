"""P3 generator input: mask with Canny edges (channels as documented)."""

import numpy as np
import pytest
import torch

from volgan.data import CANNY_PRESETS, MaskWithEdgesd, canny_edges
from volgan.errors import VolganConfigError


def _square():
    img = np.zeros((32, 32), np.float32)
    img[8:24, 8:24] = 1.0
    lab = np.zeros((32, 32), np.int64)
    lab[12:20, 12:20] = 1
    return img, lab


def test_canny_finds_the_square_border():
    img, _ = _square()
    e = canny_edges(img, *CANNY_PRESETS["heart"])
    assert e.any() and not e[12:20, 12:20].any()  # edges on the border, none inside
    assert e[7:9, 8:24].any() or e[8:10, 8:24].any()
    assert not canny_edges(np.zeros((8, 8)), 20, 60).any()


def test_overlay_and_channels_modes():
    img, lab = _square()
    d = {"image": torch.as_tensor(img)[None], "label": torch.as_tensor(lab)[None]}
    over = MaskWithEdgesd(preset="heart", mode="overlay")(d)["cond"]
    chans = MaskWithEdgesd(preset="heart", mode="channels")(d)["cond"]
    assert over.shape == (1, 32, 32) and chans.shape == (2, 32, 32)
    assert set(torch.unique(over).tolist()) == {0.0, 1.0}
    assert torch.equal(chans[0], torch.as_tensor(lab > 0).float())  # channel 0: the mask
    assert torch.equal(over[0], torch.clamp(chans[0] + chans[1], max=1))  # overlay = mask OR edges
    vol = {"image": torch.as_tensor(np.stack([img] * 3, -1))[None], "label": torch.as_tensor(np.stack([lab] * 3, -1))[None]}
    assert MaskWithEdgesd(preset="liver")(vol)["cond"].shape == (1, 32, 32, 3)
    with pytest.raises(VolganConfigError):
        MaskWithEdgesd(preset="brain")
