"""A trainer's complete resume point, as a dict of plain values, and its file on disk.

Weights, optimizer, scheduler, fp16 loss scale, RNGs, λ controller, epoch, history and best weights: a
resumed run continues bit for bit (on CPU). Only tensors, numbers, strings, lists and
dicts, so the file loads with `torch.load(..., weights_only=True)` (no pickled code).
The functions take any object with a trainer's parts (`TrainerParts`), so this module needs
nothing from `trainer.py`.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from wartune.engine.lambdas import Fixed, LambdaController
from wartune.engine.records import EpochRecord, StepTrace

if TYPE_CHECKING:
    from wartune.engine.config import TrainConfig

# How a run is executed, not what it trains: a checkpoint may go on under other values.
RUNTIME_FIELDS = frozenset({"device", "threads", "data_dir", "compile"})

FORMAT = 1


class TrainerParts(Protocol):
    """What a resume point is made of: the state a `Trainer` holds."""

    config: TrainConfig
    epoch: int
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    controller: LambdaController
    scaler: torch.amp.GradScaler
    generator: torch.Generator
    history: list[EpochRecord]
    step_traces: list[StepTrace]
    best_epoch: int
    best_state: dict[str, torch.Tensor]


def trainer_state(trainer: TrainerParts) -> dict[str, Any]:
    """Everything `restore_trainer` needs to put a fresh Trainer of the same config where this one is."""
    state: dict[str, Any] = {
        "format": FORMAT,
        "config": trainer.config.model_dump_json(),  # what trained it: `train` refuses to go on with another
        "epoch": trainer.epoch,
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        # lr_lambdas are closures: rebuilt from the config, never stored
        "scheduler": {k: v for k, v in trainer.scheduler.state_dict().items() if k != "lr_lambdas"},
        "controller": trainer.controller.state_dict(),
        "scaler": trainer.scaler.state_dict(),  # fp16's loss scale; empty otherwise
        "generator": trainer.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": [asdict(r) for r in trainer.history],
        "step_traces": [asdict(t) for t in trainer.step_traces],
        "best_epoch": trainer.best_epoch,
        "best_state": trainer.best_state,
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def restore_trainer(trainer: TrainerParts, state: dict[str, Any]) -> None:
    """Load `trainer_state`'s dict into a Trainer built from the same config (a fixed λ may differ)."""
    trainer.epoch = int(state["epoch"])
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    scheduler_state = dict(trainer.scheduler.state_dict())
    scheduler_state.update(state["scheduler"])
    trainer.scheduler.load_state_dict(scheduler_state)
    _optimizer_settings_from_config(trainer)
    if not isinstance(trainer.controller, Fixed):
        # A fixed λ is the config's, never the checkpoint's: Population Based Training
        # restores a trial from another trial's checkpoint with a new λ in its config.
        trainer.controller.load_state_dict(state["controller"])
    if state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    trainer.history = [EpochRecord.from_dict(r) for r in state["history"]]
    trainer.step_traces = [StepTrace(**t) for t in state["step_traces"]]
    trainer.best_epoch = int(state["best_epoch"])
    trainer.best_state = state["best_state"]


def _optimizer_settings_from_config(trainer: TrainerParts) -> None:
    """The lr and weight decay are the config's, never the checkpoint's: Population Based
    Training restores a trial from another trial's checkpoint with new values in its config.
    The schedule's position stays the checkpoint's, scaled to the config's base lr (every
    schedule is proportional to it); on an ordinary resume the scale is exactly 1."""
    lr, weight_decay = float(trainer.config.lr), float(trainer.config.weight_decay)
    for i, group in enumerate(trainer.optimizer.param_groups):
        group["weight_decay"] = weight_decay
        base = float(trainer.scheduler.base_lrs[i])
        if base != lr:
            group["lr"] = group["lr"] * lr / base
            group["initial_lr"] = lr
            trainer.scheduler.base_lrs[i] = lr
            trainer.scheduler._last_lr[i] = group["lr"]  # what get_last_lr reads


def save_state(state: dict[str, Any], path: Path | str) -> None:
    """Write atomically: a temp file renamed over the old one, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: two writers never share it
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write leaves no torn file behind


def load_state(path: Path | str, device: torch.device) -> dict[str, Any]:
    """Read a resume point with `weights_only=True`, its tensors mapped onto `device`."""
    return torch.load(path, map_location=device, weights_only=True)


def config_changes(state: dict[str, Any], config: TrainConfig) -> list[str]:
    """What `config` changes against the config that wrote `state` (`key before → now`), the
    runtime fields aside; none for a checkpoint written before configs were stored. One written
    before the validation split goes on only with `validation.held_out` false (its data as then)."""
    if not isinstance(state.get("config"), str):
        return []
    before, now = json.loads(state["config"]), json.loads(config.model_dump_json())
    # a config from before the validation split chose on the test split: what held_out false keeps
    before.setdefault("validation", {**now["validation"], "held_out": False})
    # a config from before the threat block (0.3.0) attacked in the L∞ ball, as one without it still does
    before.setdefault("threat", {"norm": "linf", "eps": None})
    keys = sorted((before.keys() | now.keys()) - RUNTIME_FIELDS)
    return [f"{key} {json.dumps(before.get(key))} → {json.dumps(now.get(key))}" for key in keys if before.get(key) != now.get(key)]
