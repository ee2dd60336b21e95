"""The 2D bundles' field of view (issue #21 item 3): ``crop_size`` trains on crops around the foreground at the
slice's own resolution (``image_size: null``) so a small lesion keeps its pixels, inference segments whole slices
with sliding windows of the crop, and the checkpoint's model.json tells inference all of it."""

import json

import nibabel as nib
import numpy as np
import torch

from tests.conftest import write_pair
from volgan.bundle import run_bundle
from volgan.data import SliceDataset, foreground_crop
from volgan.inferers import SlicewiseInferer


def _lab(shape, box):
    lab = torch.zeros(1, *shape, dtype=torch.long)
    lab[(0, *[slice(a, b) for a, b in box])] = 1
    return lab


def test_crop_is_centred_on_the_foreground_kept_inside_and_padded():
    img = torch.arange(100 * 80, dtype=torch.float32).reshape(1, 100, 80) / 8000 * 2 - 1
    lab = _lab((100, 80), [(40, 44), (30, 34)])  # centre (41.5, 31.5)
    i, la = foreground_crop(img, lab, (16, 16))
    assert i.shape == la.shape == (1, 16, 16) and int(la.sum()) == 16
    assert torch.equal(i, img[:, 34:50, 24:40])  # start round(41.5 - 7.5) = 34, round(31.5 - 7.5) = 24
    i, la = foreground_crop(img, _lab((100, 80), [(96, 100), (0, 3)]), (16, 16))  # at the corner: moved inside
    assert torch.equal(i, img[:, 84:100, 0:16]) and int(la.sum()) == 12
    i, la = foreground_crop(img[:, :10, :80], lab[:, :10, :80], (16, 16))  # slice shorter than the crop: padded
    assert i.shape == (1, 16, 16) and float(i[0, 0, 0]) == -1.0 and float(i[0, -1, 0]) == -1.0
    i, _ = foreground_crop(img, torch.zeros_like(lab), (20, 20))  # no foreground: the slice's centre
    assert torch.equal(i, img[:, 40:60, 30:50])


def test_small_lesion_survives_the_crop_but_not_the_resize(tmp_path):
    vol = np.random.RandomState(0).normal(0, 1, (128, 128, 3)).astype(np.float32)
    lab = np.zeros((128, 128, 3), np.uint8)
    lab[100:104, 20:23, 1] = 1  # 12 pixels in a 128x128 slice
    item = write_pair(tmp_path, "c0", vol, lab)
    resized = SliceDataset([item], size=(16, 16), empty_fraction=0.0)
    cropped = SliceDataset([item], size=None, crop=(32, 32), empty_fraction=0.0)
    assert int(resized[0]["label"].sum()) <= 1  # resizing the whole slice to 16 px leaves at most a pixel
    assert cropped[0]["image"].shape == (1, 32, 32) and int(cropped[0]["label"].sum()) == 12


@torch.no_grad()
def test_windowed_slicewise_inference_covers_the_slice():
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    x = torch.randn(1, 1, 32, 32, 3).clamp(-1, 1)
    whole = SlicewiseInferer(None, 2, 4)(x, net)
    one_window = SlicewiseInferer(None, 2, 4, window=(32, 32))(x, net)
    assert torch.allclose(whole, one_window, atol=1e-5)  # a window the size of the slice is one pass
    big = torch.randn(1, 1, 70, 50, 2).clamp(-1, 1)
    out = SlicewiseInferer(None, 2, 4, window=(32, 32))(big, net)
    assert out.shape == (1, 2, 70, 50, 2)
    pointwise = torch.nn.Conv2d(1, 2, 1)  # no spatial context: the blended windows equal one pass everywhere
    assert torch.allclose(SlicewiseInferer(None, 2, 4, window=(32, 32))(big, pointwise),
                          SlicewiseInferer(None, 2, 4)(big, pointwise), atol=1e-5)


def test_p5_trained_on_crops_segments_native_slices_from_its_model_json(tmp_path):
    rng = np.random.RandomState(0)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        vol = rng.normal(0, 0.2, (64, 48, 4)).astype(np.float32)
        lab = np.zeros((64, 48, 4), np.uint8)
        y, x = 10 + 10 * i, 8 + 6 * i
        lab[y:y + 5, x:x + 4, :] = 1
        vol[lab > 0] += 2.0
        write_pair(data, f"c{i}", vol, lab)
    out = tmp_path / "run"
    run_bundle("wgan_pairs_seg_2d", "train", dataset_dir=str(data), output_dir=str(out), device="cpu", image_size=None,
               crop_size=[32, 32], ratio="8-8", gen_channels=32, critic_channels=8, unet_channels=[8, 8, 8],
               gan_iterations=2, max_epochs=2, val_interval=1, patience_iterations=100, val_fraction=0.25, amp=False)
    side = json.loads((out / "model.json").read_text())
    assert side["trained_with"] == {"image_size": None, "crop_size": [32, 32], "slice_axis": 2}
    assert side["network"]["channels"] == [8, 8, 8]
    seg = tmp_path / "seg"
    # nothing but the checkpoint: image size, crop, channels and classes come from model.json
    run_bundle("wgan_pairs_seg_2d", "inference", input=str(data / "c0_image.nii.gz"), ckpt_path=str(out / "model.pt"),
               output_dir=str(seg), device="cpu")
    pred = nib.load(str(seg / "c0_image_seg.nii.gz"))
    assert pred.shape == (64, 48, 4)
    ev = tmp_path / "eval"
    run_bundle("wgan_pairs_seg_2d", "evaluate", dataset_dir=str(data), output_dir=str(out), eval_dir=str(ev),
               device="cpu", image_size=None, crop_size=[32, 32], unet_channels=[8, 8, 8], gen_channels=32,
               critic_channels=8, amp=False)
    assert (ev / "results.json").is_file()
