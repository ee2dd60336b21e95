"""Replayable lesion perturbation (issue #17): the random transform draws parameters, the deterministic one applies
them, and a synthetic pair's provenance replays its label map bit for bit."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import tiny_case
from volgan.data import LesionPerturbd, RandLesionPerturbd, apply_lesion_perturbation, draw_lesion_perturbation
from volgan.errors import VolganConfigError


def test_drawn_parameters_replay_exactly():
    _, lab = tiny_case(np.random.RandomState(1), (24, 24, 24))
    params = draw_lesion_perturbation(np.random.RandomState(7), 3)
    a, report = apply_lesion_perturbation(lab, params)
    b, _ = apply_lesion_perturbation(lab, json.loads(json.dumps(params)))  # through JSON, as in provenance
    assert report["perturbed"] and np.array_equal(a, b) and not np.array_equal(a, lab)
    other, _ = apply_lesion_perturbation(lab, {**params, "elastic_seed": params["elastic_seed"] + 1})
    assert not np.array_equal(a, other)  # the elastic field is part of the parameters
    with pytest.raises(VolganConfigError, match="lack"):
        apply_lesion_perturbation(lab, {"scale": 1.0})


def test_random_transform_is_the_deterministic_one_with_drawn_parameters():
    _, lab = tiny_case(np.random.RandomState(2), (24, 24, 24))
    rand = RandLesionPerturbd(keys="label")
    rand.set_random_state(seed=3)
    out = rand({"label": lab[None]})
    replay = LesionPerturbd(keys="label", params=out["label_perturbation"])({"label": lab[None]})
    assert np.array_equal(out["label"], replay["label"])


def test_synthesis_provenance_replays_the_written_label_map(tmp_path, tiny_dataset, tiny_train_overrides):
    from volgan.bundle import run_bundle

    folder, items = tiny_dataset
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(folder), output_dir=str(tmp_path / "g"), max_epochs=1,
               **tiny_train_overrides)
    out = tmp_path / "syn"
    run_bundle("mmgan_label2mri_3d", "inference", input=[{"label": items[0]["label"]}],
               ckpt_path=str(tmp_path / "g" / "model.pt"), output_dir=str(out), perturb=True, seed=4,
               roi_size=[24, 24, 24], device="cpu", gen_channels=tiny_train_overrides["gen_channels"])
    (prov_file,) = out.glob("*_synth.json")
    prov = json.loads(prov_file.read_text(encoding="utf-8"))
    written = np.asarray(nib.load(str(out / prov["label"])).dataobj)
    source = np.asarray(nib.load(prov["source_label_map"]).dataobj)
    replayed, _ = apply_lesion_perturbation(source, prov["perturbation"])
    assert prov["perturbation"]["perturbed"] and np.array_equal(replayed, written)
