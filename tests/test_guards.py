"""Reliability guarantees of issue #18 that need no server: nothing non-finite is exported or kept, a kill never
costs more than the last interval, one run owns an output folder, a resumed run gets its own lr schedule."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from tests.conftest import write_cases
from volgan.bundle import run_bundle
from volgan.errors import VolganConfigError, VolganError
from volgan.evaluation.registry import METHODS
from volgan.handlers import non_finite_entries

TINY_3D = {"mmgan_label2mri_3d": dict(patch_size=[16, 16, 16], gen_channels=[4, 8, 16, 32], disc_channels=[8, 16, 16]),
           "cycleshape_ct_mri_3d": dict(METHODS["cycleshape_ct_mri_3d"].quick, label_map_a={1: 1, 2: 2, 3: 3, 4: 4},
                                        label_map_b={1: 1, 2: 2, 3: 3, 4: 4}, intensity_a={"kind": "percentile"},
                                        pretrain_s_epochs=0, pretrain_gd_epochs=0, max_epochs=3)}
#: the learning-rate ids that make each bundle diverge
DIVERGE = {"mmgan_label2mri_3d": {"lr_g": 1e30, "lr_d": 1e30}, "cycleshape_ct_mri_3d": {"lr_g": 1e30, "lr_s": 1e30},
           "gan_pretrain_seg_2d": {"lr_s": 1e30, "lr_finetune": 1e30, "mode": "real_only", "finetune_epochs": 4},
           "wgan_pairs_seg_2d": {"lr_unet": 1e30, "ratio": "16-0"},
           "adversarial_unet_aug_2d": {"lr_unet": 1e30, "augment_with_gan": False}}


def _data_ids(bundle: str, tmp_path, tiny_dataset):
    if bundle in TINY_3D:
        folder, _ = tiny_dataset
        if bundle == "cycleshape_ct_mri_3d":
            return {"domain_a": str(folder), "domain_b": str(folder)}
        return {"dataset_dir": str(folder)}
    return {"dataset_dir": str(write_cases(tmp_path / "vols", 4, depth=6))}


@pytest.mark.parametrize("bundle", sorted(DIVERGE))
def test_a_diverging_run_stops_and_keeps_nothing_non_finite(bundle, tmp_path, tiny_dataset):
    out = tmp_path / "run"
    overrides = {**METHODS[bundle].quick, **TINY_3D.get(bundle, {}), **DIVERGE[bundle], "device": "cpu",
                 "amp": False, "max_epochs": 3, "max_nonfinite_steps": 4}
    overrides.pop("roi_size", None)
    if bundle in ("wgan_pairs_seg_2d", "adversarial_unet_aug_2d"):
        overrides.update(val_interval=1, patience_iterations=100)
    with pytest.raises(VolganError, match="non-finite") as err:
        run_bundle(bundle, "train", output_dir=str(out), **_data_ids(bundle, tmp_path, tiny_dataset), **overrides)
    assert "last good checkpoint" in str(err.value) and len(str(err.value).splitlines()) == 1
    for f in out.rglob("*.pt"):  # whatever was written before the divergence is finite
        assert not non_finite_entries(torch.load(f, weights_only=True)), f


def test_one_complete_checkpoint_exists_at_every_moment(tmp_path, tiny_dataset, tiny_train_overrides, monkeypatch):
    """n_saved 1: ignite asks to delete the old checkpoint before the new one is written; it is deleted after."""
    import volgan.handlers as handlers

    folder, _ = tiny_dataset
    out = tmp_path / "run"
    seen = []
    real_save = handlers.atomic_torch_save

    def save(obj, path):
        if path.name.startswith("checkpoint_"):
            seen.append(sorted(p.name for p in out.glob("checkpoint_*.pt")))  # what survives a kill right now
        return real_save(obj, path)

    monkeypatch.setattr(handlers, "atomic_torch_save", save)
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(folder), output_dir=str(out), max_epochs=3, n_saved=1,
               **tiny_train_overrides)
    assert seen == [[], ["checkpoint_1.pt"], ["checkpoint_2.pt"]]
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_3.pt"]


def test_resume_false_refuses_an_earlier_run_unless_overwrite(tmp_path, tiny_dataset, tiny_train_overrides):
    folder, _ = tiny_dataset
    out = tmp_path / "run"
    common = dict(dataset_dir=str(folder), output_dir=str(out), **tiny_train_overrides)
    run_bundle("mmgan_label2mri_3d", "train", max_epochs=2, **common)
    with pytest.raises(VolganConfigError, match="holds checkpoints of an earlier run"):
        run_bundle("mmgan_label2mri_3d", "train", max_epochs=1, resume=False, **common)
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_1.pt", "checkpoint_2.pt"]
    run_bundle("mmgan_label2mri_3d", "train", max_epochs=1, resume=False, overwrite=True, **common)
    assert sorted(p.name for p in out.glob("checkpoint_*.pt")) == ["checkpoint_1.pt"]  # only the new run's


def test_one_run_owns_an_output_folder(tmp_path, tiny_dataset, tiny_train_overrides):
    folder, _ = tiny_dataset
    out = tmp_path / "run"
    out.mkdir()
    lock = out / ".volgan.lock"
    lock.write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}), encoding="utf-8")  # alive
    with pytest.raises(VolganConfigError, match=r"being written by another run \(pid"):
        run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(folder), output_dir=str(out), max_epochs=1,
                   **tiny_train_overrides)
    assert not list(out.glob("checkpoint_*.pt"))
    lock.write_text(json.dumps({"pid": 2**22 + 12345, "host": os.uname().nodename}), encoding="utf-8")  # dead
    run_bundle("mmgan_label2mri_3d", "train", dataset_dir=str(folder), output_dir=str(out), max_epochs=1,
               **tiny_train_overrides)
    assert (out / "checkpoint_1.pt").is_file() and not lock.exists()  # taken over, released at the end


def test_resuming_with_more_epochs_extends_the_lr_schedule(tmp_path, tiny_dataset, tiny_train_overrides):
    """MM-GAN decays the lr to 0 at max_epochs; resumed with a larger max_epochs it trains on (it stayed 0)."""
    folder, _ = tiny_dataset
    out = tmp_path / "run"
    common = dict(dataset_dir=str(folder), output_dir=str(out), **tiny_train_overrides)
    run_bundle("mmgan_label2mri_3d", "train", max_epochs=2, decay_start=0, **common)
    done = torch.load(out / "checkpoint_2.pt", weights_only=True)
    assert done["g_optimizer"]["param_groups"][0]["lr"] == 0.0
    run_bundle("mmgan_label2mri_3d", "train", max_epochs=4, decay_start=2, **common)
    more = torch.load(out / "checkpoint_3.pt", weights_only=True)
    assert more["g_scheduler"]["last_epoch"] == 3 and more["g_optimizer"]["param_groups"][0]["lr"] > 0
    assert any(not torch.equal(done["generator"][k], more["generator"][k]) for k in done["generator"])


class Killed(BaseException):
    """Stands for SIGKILL inside one process: not an ``Exception``, so no handler sees it and nothing is saved."""


#: per bundle: the stage and epoch in which the run is killed (after one iteration), and the stage epochs
KILL_AT = {"mmgan_label2mri_3d": ("train", 2, {"max_epochs": 3}),
           "cycleshape_ct_mri_3d": ("train", 3, {"max_epochs": 3, "pretrain_s_epochs": 1, "pretrain_gd_epochs": 1}),
           "gan_pretrain_seg_2d": ("finetune", 2, {"mode": "ours", "gan_epochs": 2, "pretrain_epochs": 1,
                                                   "finetune_epochs": 3}),
           "wgan_pairs_seg_2d": ("unet", 2, {"max_epochs": 3, "val_interval": 1}),
           "adversarial_unet_aug_2d": ("unet", 2, {"max_epochs": 3, "val_interval": 1})}


def _states(out):
    """Every .pt file of a run (exported models, checkpoints) loaded weights-only, by relative path."""
    return {str(f.relative_to(out)): torch.load(f, weights_only=True) for f in sorted(out.rglob("*.pt"))}


@pytest.mark.parametrize("bundle", sorted(KILL_AT))
def test_killed_and_resumed_equals_uninterrupted(bundle, tmp_path, tiny_dataset, monkeypatch):
    """Kill a training one iteration into an epoch, rerun the command: every model and checkpoint it ends with is
    bitwise the uninterrupted run's (networks, optimisers, schedulers, pools, best-model and early-stopping
    state), because every epoch's randomness is derived from (seed, stage, epoch) and the rest is checkpointed."""
    import volgan.handlers as handlers
    from ignite.engine import Events

    from tests.test_reliability import _same

    stage, epoch, budget = KILL_AT[bundle]
    overrides = {**METHODS[bundle].quick, **TINY_3D.get(bundle, {}), **budget, "device": "cpu", "amp": False}
    overrides.pop("roi_size", None)
    data = _data_ids(bundle, tmp_path, tiny_dataset)
    run_bundle(bundle, "train", output_dir=str(tmp_path / "straight"), **data, **overrides)

    real_call, kills = handlers.EpochSeed.__call__, []

    def kill_one_iteration_in(self, engine):
        real_call(self, engine)
        if (self.tag, engine.state.epoch) == (stage, epoch) and not kills:
            def kill(e):
                kills.append(e.state.iteration)
                raise Killed

            engine.add_event_handler(Events.ITERATION_COMPLETED(once=engine.state.iteration + 1), kill)

    monkeypatch.setattr(handlers.EpochSeed, "__call__", kill_one_iteration_in)
    out = tmp_path / "killed"
    with pytest.raises(Killed):
        run_bundle(bundle, "train", output_dir=str(out), **data, **overrides)
    assert kills, "the run was not killed"
    run_bundle(bundle, "train", output_dir=str(out), **data, **overrides)  # the same command again: resumes
    straight, resumed = _states(tmp_path / "straight"), _states(out)
    assert sorted(straight) == sorted(resumed)
    for name in straight:
        assert _same(straight[name], resumed[name]), f"{bundle}: {name} differs after kill + resume"


def test_staged_outputs_never_commit_what_a_killed_run_left(tmp_path):
    """2D inference stages its outputs in a fixed folder: files a killed run left there are not moved into the
    output folder by the next run (all or nothing means this run's files only)."""
    from ignite.engine import Engine

    from volgan.handlers import StagedOutputs

    out, staging = tmp_path / "out", tmp_path / "out" / ".staging-segmentations"
    staging.mkdir(parents=True)
    (staging / "left_by_a_killed_run_seg.nii.gz").write_bytes(b"partial")
    engine = Engine(lambda e, b: (staging / f"case{b}_seg.nii.gz").write_bytes(b"done"))
    StagedOutputs(staging, out).attach(engine)
    engine.run([1, 2], max_epochs=1)
    assert sorted(p.name for p in out.iterdir()) == ["case1_seg.nii.gz", "case2_seg.nii.gz"]


def test_split_keeps_duplicate_entries_on_one_side():
    """#18: a case listed twice in a datalist never lands in training and validation at once."""
    from volgan.data.dataset import split_datalist

    items = [{"image": f"c{i % 5}.nii.gz", "label": f"c{i % 5}_label.nii.gz"} for i in range(15)]  # each case 3x
    for seed in range(20):
        train, val = split_datalist(items, 0.4, seed)
        assert not {t["image"] for t in train} & {v["image"] for v in val}, seed
        assert len(train) + len(val) == 15 and len(val) % 3 == 0


def _dicom_series(folder, uid: str, n: int = 3) -> None:
    """``n`` slices of one DICOM series (SimpleITK), series instance UID ``uid``."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for i in range(n):
        sl = sitk.GetImageFromArray((np.arange(64, dtype=np.int16).reshape(8, 8) + 10 * i)[None])
        for tag, value in (("0020|000e", uid), ("0020|000d", "1.2.826.0.1.3680043.2.1125.1"), ("0008|0060", "MR"),
                           ("0020|0013", str(i + 1)), ("0020|0032", f"0\\0\\{i}"), ("0008|0018", f"{uid}.{i + 1}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0")):
            sl.SetMetaData(tag, value)
        w.SetFileName(str(folder / f"{uid.rsplit('.', 1)[-1]}_{i}.dcm"))
        w.Execute(sl)


def test_a_dicom_folder_with_two_series_is_refused(tmp_path):
    """#18: a DICOM folder holding two series is one clear error, not one series picked silently; one series loads."""
    from volgan.data.validate import load_volume
    from volgan.errors import VolganDataError

    one = tmp_path / "one"
    _dicom_series(one, "1.2.826.0.1.3680043.2.1125.7")
    assert tuple(load_volume(one).shape)[-1] == 3
    two = tmp_path / "two"
    _dicom_series(two, "1.2.826.0.1.3680043.2.1125.7")
    _dicom_series(two, "1.2.826.0.1.3680043.2.1125.8")
    with pytest.raises(VolganDataError, match="holds 2 DICOM series"):
        load_volume(two)


def test_looping_symbolic_links_are_one_line(tmp_path, capsys):
    """#18: links that point at each other (and a folder link to itself) end in one line naming the file."""
    from tests.conftest import tiny_case, write_pair
    from volgan.apps.cli import main

    d = tmp_path / "d"
    d.mkdir()
    write_pair(d, "c0", *tiny_case(np.random.RandomState(0)))
    os.symlink("c1_label.nii.gz", d / "c1_image.nii.gz")
    os.symlink("c1_image.nii.gz", d / "c1_label.nii.gz")
    os.symlink(".", d / "loop")
    assert main(["check-data", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c1_image.nii.gz" in err[0] and "symbolic link" in err[0]


def test_check_data_reports_every_problem_of_every_file(tmp_path, capsys):
    """#21: check-data names each broken file (image and label of one case both, and other cases), one line each."""
    from tests.conftest import tiny_case, write_pair
    from volgan.apps.cli import main

    d = tmp_path / "d"
    d.mkdir()
    rng = np.random.RandomState(0)
    img, lab = tiny_case(rng)
    write_pair(d, "c0", img, lab)
    nan = img.copy()
    nan[3, 3, 3] = np.nan
    write_pair(d, "c1", nan, np.where(lab == 4, 9, lab))  # a NaN image and a label value outside the set
    write_pair(d, "c2", img[:20], lab)  # shapes differ
    assert main(["check-data", str(d), "--label-values", "0", "1", "2", "3", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("volgan: error: ") for line in err), err
    assert "c1_image" in err[0] and "NaN" in err[0] and "c1_label" in err[1] and "9" in err[1]
    assert "c2_" in err[2]
