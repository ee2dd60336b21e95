"""Mixing ratios, multi-modal (4D) images with a modality setting, label mapping, NRRD input."""

import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import tiny_case, write_pair
from volgan.bundle import run_bundle
from volgan.data import load_datalist, mix_datalists, validate_datalist
from volgan.errors import VolganConfigError, VolganDataError


def test_mix_ratios():
    real = [{"image": f"r{i}", "label": f"rl{i}"} for i in range(4)]
    synth = [{"image": f"s{i}", "label": f"sl{i}"} for i in range(12)]
    for pct, n in ((0, 0), (100, 4), (300, 12)):
        mixed = mix_datalists(real, synth, pct, seed=1)
        assert len(mixed) == 4 + n and sum(m["synthetic"] for m in mixed) == n
    assert mix_datalists(real, synth, 100, seed=1) == mix_datalists(real, synth, 100, seed=1)
    with pytest.raises(VolganConfigError, match="needs 20 synthetic"):
        mix_datalists(real, synth, 500)


def test_multimodal_4d_with_modality_and_label_mapping(tmp_path, tiny_train_overrides):
    rng = np.random.RandomState(0)
    data = tmp_path / "brats"
    data.mkdir()
    for i in range(2):
        img, lab = tiny_case(rng, (16, 16, 16))
        four = np.stack([img, img * 0.5, img + 10 * (img > 0), img * 2], axis=-1)
        lab = np.where(lab == 3, 0, lab)  # raw BraTS: no brain label
        lab = np.where(lab == 4, 7, lab)  # and an odd id mapped below
        write_pair(data, f"c{i}", four, lab)
    items = load_datalist(data)
    with pytest.raises(VolganDataError, match="4 channels"):
        validate_datalist(items)
    validate_datalist(items, image_channels=4, label_values=[0, 1, 2, 7])
    out = tmp_path / "out"
    overrides = {**tiny_train_overrides, "patch_size": [16, 16, 16]}
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(data), output_dir=str(out), max_epochs=1,
               image_channels=4, modality=2, label_mapping={0: 0, 1: 1, 2: 2, 7: 4}, brain_as_label=True,
               **overrides)
    import torch

    sd = torch.load(out / "model.pt", weights_only=True)  # a plain state dict
    out_w = [v for k, v in sd.items() if k.startswith("output_block.0") and k.endswith("original")][0]
    assert out_w.shape[0] == 1  # one model per modality


def test_nrrd_pair_reads_and_validates(tmp_path):
    img, lab = tiny_case(np.random.RandomState(0), (12, 12, 12))
    for arr, name in ((img.astype(np.float32), "a_image.nrrd"), (lab.astype(np.uint8), "a_label.nrrd")):
        im = sitk.GetImageFromArray(arr)
        im.SetSpacing((2.0, 2.0, 2.0))
        sitk.WriteImage(im, str(tmp_path / name))
    items = load_datalist(tmp_path)
    assert len(items) == 1
    validate_datalist(items, label_values=[0, 1, 2, 3, 4])


def test_dicom_series_folder_reads(tmp_path):
    """A DICOM series folder is one input volume (MONAI's ITK reader)."""
    from volgan.data import list_inputs, load_volume

    arr = (np.arange(6 * 10 * 12).reshape(6, 10, 12) % 200).astype(np.int16)  # z, y, x
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.8, 2.0))
    series = tmp_path / "case_dicom"
    series.mkdir()
    import locale

    saved_locale = locale.setlocale(locale.LC_ALL)  # GDCM's DICOM writer resets the C locale: restore it after
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(arr.shape[0]):
        sl = img[:, :, z]
        for tag, value in (("0008|0060", "MR"), ("0020|000e", "1.2.826.0.1.3680043.2.1125.1"),
                           ("0020|0013", str(z + 1)), ("0020|0032", f"0\\0\\{2.0 * z}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", "0.8\\0.8"), ("0018|0050", "2.0")):
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(series / f"slice{z:03d}.dcm"))
        writer.Execute(sl)
    locale.setlocale(locale.LC_ALL, saved_locale)
    assert list_inputs(series) == [str(series)]
    vol = load_volume(series)
    assert tuple(vol.shape) == (12, 10, 6)  # x, y, z
    assert np.allclose(np.asarray(vol)[:, :, 0].T, arr[0])
