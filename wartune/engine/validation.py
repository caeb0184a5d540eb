"""The validation split: held out from the training split, so that choices never read the test split.

A trial's best epoch, a search's best λ and the epoch at which ζ is measured are maxima over
noisy estimates; chosen on the test split, the reported test figure would be the maximum that
chose it (Rice et al. 2020 hold out a validation split for this). So a `Trainer` carves a
validation split out of the training split before anything trains, stratified by class and
drawn by `ValidationSettings.seed`: the same images for every trial, model and λ of a search
(they share the seed and the data), whatever each trial's own seed. The test split is then
read once per trial, at the end, on the weights the validation split chose.
"""

from __future__ import annotations

import dataclasses

import torch

from wartune.engine.config import ValidationSettings
from wartune.engine.data import TensorDataset
from wartune.errors import ConfigError


def validation_size(settings: ValidationSettings, default: float | int, n_train: int) -> int:
    """How many training images the validation split takes: `examples`, or `fraction` of the
    training split, or the dataset's default (a fraction below 1, else a count)."""
    if settings.examples is not None:
        return settings.examples
    fraction = settings.fraction if settings.fraction is not None else (default if default < 1 else None)
    return round(fraction * n_train) if fraction is not None else int(default)


def validation_indices(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """`count` training indices, stratified by class (scikit-learn's `train_test_split`), sorted.

    Refused in one line when the split would leave a class without a validation or a training
    image, or take every training image.
    """
    from sklearn.model_selection import train_test_split

    labels = labels.cpu()
    classes = len(labels.unique())
    if not classes <= count <= len(labels) - classes:
        raise ConfigError(
            f"validation: {count} images cannot be held out of {len(labels)} training images of {classes} classes "
            f"(each class needs one in each split): give validation.examples between {classes} and {len(labels) - classes}"
        )
    _, held = train_test_split(range(len(labels)), test_size=count, random_state=seed, stratify=labels.numpy())
    return torch.tensor(sorted(held), dtype=torch.int64)


def held_out_indices(data: TensorDataset, settings: ValidationSettings) -> torch.Tensor:
    """The training indices the validation split takes (none with `held_out` false), without
    copying any image: what the driver records and `carve_validation` cuts by."""
    if not settings.held_out:
        return torch.empty(0, dtype=torch.int64)
    count = validation_size(settings, data.info.validation, len(data.train_y))
    return validation_indices(data.train_y, count, settings.seed)


def carve_validation(data: TensorDataset, settings: ValidationSettings) -> tuple[TensorDataset, torch.Tensor]:
    """`data` with its validation split taken out of its training split, and the indices taken.

    The training split keeps its remaining images in their order. With `held_out` false (a
    trial 0.2.0 or before began) the validation split is the test split, as its choices were
    then, and no index is taken.
    """
    held = held_out_indices(data, settings)
    if not settings.held_out:
        return dataclasses.replace(data, val_x=data.test_x, val_y=data.test_y), held
    keep = torch.ones(len(data.train_y), dtype=torch.bool)
    keep[held] = False
    held_d, keep_d = held.to(data.train_y.device), keep.to(data.train_y.device)
    return dataclasses.replace(
        data, train_x=data.train_x[keep_d], train_y=data.train_y[keep_d], val_x=data.train_x[held_d], val_y=data.train_y[held_d]
    ), held
