"""Weights that another codebase wrote, loaded into a registry network for `wartune evaluate`.

A researcher's checkpoint is rarely a wartune model folder: it is a safetensors file or a
`torch.save`d state_dict, often wrapped (`{"state_dict": ...}`, `{"model": ...}`) and, from
`nn.DataParallel` or DDP, with every key prefixed `module.`. This module unwraps those forms,
reads pickles with `weights_only=True` only, and loads the tensors into the registry network
of the name given, refusing in one line a file whose tensors do not fit it (how many keys are
missing or unexpected, and the first of each). The network's layers are the registry's own,
BN included, so the file must come from the same architecture: wartune's own folders, or
code that defines it the same way (TRADES' WideResNet does).
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from wartune.engine.config import TrainConfig, validate
from wartune.engine.data import dataset_info
from wartune.engine.models import create_model
from wartune.errors import WartuneError
from wartune.results.model_files import StateMisfit

WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "weights")  # where checkpoints keep their tensors
PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP; torch.compile


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file or a torch checkpoint, unwrapped and unprefixed."""
    if not path.is_file():
        raise WartuneError(f"no weights file {str(path)!r}")
    if path.suffix == ".safetensors":
        try:
            state: Any = load_file(str(path))
        except (OSError, SafetensorError) as err:
            raise WartuneError(f"{str(path)!r} is not readable safetensors weights ({str(err).splitlines()[0]})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as err:
            raise WartuneError(f"{str(path)!r} is not a torch state_dict readable with weights_only=True "
                               f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None  # fmt: skip
    while isinstance(state, dict) and not _all_tensors(state):
        inner = next((state[k] for k in WRAPPERS if isinstance(state.get(k), dict)), None)
        if inner is None:
            raise WartuneError(f"{str(path)!r} holds no state_dict (looked at the top level and {', '.join(WRAPPERS)})")
        state = inner
    if not isinstance(state, dict) or not state:
        raise WartuneError(f"{str(path)!r} holds no tensors")
    return {_unprefixed(key): value for key, value in state.items()}


def _all_tensors(state: dict[Any, Any]) -> bool:
    return bool(state) and all(isinstance(v, torch.Tensor) for v in state.values())


def _unprefixed(key: str) -> str:
    for prefix in PREFIXES:
        while key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def fit_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    """Load `state` into `model`, or one line naming what does not fit."""
    if misfit := StateMisfit.of(state, model.state_dict()):
        raise WartuneError(f"{str(path)!r} does not fit {name}: {misfit.describe(name, 'key')}")
    model.load_state_dict(state)


def load_weights(path: Path, model_name: str, dataset: str) -> tuple[nn.Module, dict[str, Any]]:
    """The registry network `model_name` for `dataset`, with the file's weights, and the meta
    `wartune evaluate` reads of a model folder (the dataset's default threat model)."""
    config = validate(TrainConfig, {"model": model_name, "dataset": dataset}, source="--model/--dataset")
    info = dataset_info(dataset)
    model = create_model(model_name, info.num_classes, info.in_channels, info.image_size)
    fit_into(model, read_state_dict(path), path, model_name)
    model.eval()
    meta = {"model": model_name, "dataset": dataset, "train_config": config.model_dump(mode="json"), "weights": str(path)}
    return model, meta
