"""What a label-map-to-image generator is fed at synthesis (P1 Sec. V-D): the label map, checked, optionally with its
lesion perturbed (replayable: ``volgan.data.perturbation``), one-hot encoded."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.transforms import AsDiscreted, Compose, CopyItemsd, DeleteItemsd, EnsureTyped, LoadImaged

from volgan.config import as_bool
from volgan.data.perturbation import RandLesionPerturbd
from volgan.data.validate import ValidateLabelMapd

__all__ = ["synthesis_preprocessing", "perturbation_suffix"]


def synthesis_preprocessing(num_classes: int = 5, label_values: Sequence[int] | None = (0, 1, 2, 3, 4),
                            spatial_dims: int = 3, perturb: Any = False, perturb_args: Mapping | None = None,
                            seed: int | None = 0, validate: bool = True) -> Compose:
    """Label map in ``image`` -> one-hot network input in ``image``, the (perturbed) label map kept in ``label``.

    With ``perturb``, the lesion is deformed first (``RandLesionPerturbd``, seeded per case by ``seed`` and the file
    name: the same case gets the same perturbation in any run, sharded or not), for the augmentation workflow.
    """
    xforms: list = [LoadImaged(keys="image", image_only=True, ensure_channel_first=True)]
    if validate:
        xforms.append(ValidateLabelMapd(keys="image", spatial_dims=spatial_dims, label_values=label_values))
    xforms.append(CopyItemsd(keys="image", names="label"))
    if as_bool(perturb):
        t = RandLesionPerturbd(keys="label", **{"case_seed": None if seed is None else int(seed),
                                                **dict(perturb_args or {})})
        xforms += [t, DeleteItemsd(keys="image"), CopyItemsd(keys="label", names="image")]
    xforms += [EnsureTyped(keys="image", dtype=torch.float32), AsDiscreted(keys="image", to_onehot=int(num_classes))]
    return Compose(xforms)


def perturbation_suffix(perturb: Any, seed: Any) -> str:
    """Output-name suffix of one perturbed synthesis (``_p<seed>``), so several of one label map share a folder."""
    return f"_p{int(seed)}" if as_bool(perturb) else ""
