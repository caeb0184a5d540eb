"""A trained model on disk: `model.safetensors` plus `model.json` describing it.

Loadable with `create_model` alone (no pickle, no wartune trainer state): the JSON names
the registry model and the input shape, the safetensors file holds the weights. Both are
written to temporary files and renamed, so a killed process never leaves a torn model;
a folder that still holds a broken or foreign one is refused in one line naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from wartune.engine.models import create_model
from wartune.errors import WartuneError

WEIGHTS_FILE, META_FILE = "model.safetensors", "model.json"

# What `model.json` must hold to rebuild the network and evaluate it.
_META_TYPES: dict[str, type] = {
    "model": str,
    "num_classes": int,
    "in_channels": int,
    "image_size": int,
    "dataset": str,
    "train_config": dict,
}


def save_model_files(state: dict[str, Any], meta: dict[str, Any], folder: Path) -> None:
    """Write weights and their description into `folder` (created if needed), each atomically.

    The weights go first: a `model.json` on disk always describes complete weights.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in state.items()}
    _replace(folder / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp)))
    _replace(folder / META_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2, sort_keys=True)))


def copy_model_files(source: Path, folder: Path) -> None:
    """Copy a saved model (e.g. out of a checkpoint) into `folder`, each file atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, META_FILE):
        _replace(folder / name, lambda tmp, name=name: shutil.copyfile(source / name, tmp))


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """`write` a hidden temporary file beside `path`, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_model(folder: Path | str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network named in `model.json` and load its safetensors weights."""
    folder = Path(folder)
    meta = read_meta(folder)
    try:
        model = create_model(meta["model"], meta["num_classes"], meta["in_channels"], meta["image_size"])
    except WartuneError as err:
        raise WartuneError(f"{str(folder / META_FILE)!r}: {err}") from None
    model.load_state_dict(_read_weights(folder / WEIGHTS_FILE, model.state_dict()))
    model.eval()
    return model, meta


def read_meta(folder: Path) -> dict[str, Any]:
    """`model.json` as a dict with the keys `load_model` and `wartune evaluate` need."""
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise WartuneError(f"cannot read {str(path)!r}: {err.strerror or err}") from None
    except ValueError as err:  # not UTF-8, or not JSON
        raise WartuneError(f"{str(path)!r} is not a model description (not JSON: {str(err).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise WartuneError(f"{str(path)!r} is not a model description (expected a JSON object)")
    for key, kind in _META_TYPES.items():
        value = meta.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 1):
            allowed = "a positive integer" if kind is int else f"a JSON {'object' if kind is dict else 'string'}"
            raise WartuneError(f"{str(path)!r}: {key!r} is missing or not {allowed} (got {value!r})")
    return meta


def _read_weights(path: Path, expected: dict[str, Tensor]) -> dict[str, Tensor]:
    """The stored tensors, checked against the network's own names and shapes."""
    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise WartuneError(f"{str(path)!r} is not readable safetensors weights ({str(err).splitlines()[0]})") from None
    if misfit := StateMisfit.of(state, expected):
        raise WartuneError(f"{str(path)!r} does not match the model in {META_FILE}: {misfit.describe('the model', 'tensor')}")
    return state


@dataclass(frozen=True)
class StateMisfit:
    """How stored tensors fail to fit a network's own (names missing or unexpected, the first
    shape that differs); each loader words it for its own file (`foreign_weights.py` too)."""

    missing: list[str]
    extra: list[str]
    shape: tuple[str, tuple[int, ...], tuple[int, ...]] | None

    @classmethod
    def of(cls, state: Mapping[str, Tensor], expected: Mapping[str, Tensor]) -> StateMisfit:
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        shape = next(
            ((k, tuple(state[k].shape), tuple(t.shape)) for k, t in expected.items() if k in state and state[k].shape != t.shape), None
        )
        return cls(missing, extra, shape)

    def __bool__(self) -> bool:
        return bool(self.missing or self.extra or self.shape)

    def describe(self, model: str, noun: str) -> str:
        """What does not fit, the empty parts left out (`noun`: what the file holds, "key" or
        "tensor"); `model` names the network in the shape's part, where a width shows."""
        parts = [f"{len(names)} {noun}{'s' if len(names) > 1 else ''} {kind} ({names[0]}{', ...' if len(names) > 1 else ''})"
                 for kind, names in (("missing", self.missing), ("unexpected", self.extra)) if names]  # fmt: skip
        if self.shape is not None:
            key, have, need = self.shape
            parts.append(f"{key} has shape {have}, {model} needs {need}")
        return "; ".join(parts)
