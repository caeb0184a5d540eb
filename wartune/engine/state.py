"""A trainer's complete resume point, as a dict of plain values, and its file on disk.

Weights, optimizer, scheduler, fp16 loss scale, RNGs, λ controller, epoch, history and best weights: a
resumed run continues bit for bit (on CPU). Only tensors, numbers, strings, lists and
dicts, so the file loads with `torch.load(..., weights_only=True)` (no pickled code).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from wartune.engine.lambdas import Fixed
from wartune.engine.records import EpochRecord, StepTrace

if TYPE_CHECKING:
    from wartune.engine.trainer import Trainer

FORMAT = 1


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """Everything `restore_trainer` needs to put a fresh Trainer of the same config where this one is."""
    state: dict[str, Any] = {
        "format": FORMAT,
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


def restore_trainer(trainer: Trainer, state: dict[str, Any]) -> None:
    """Load `trainer_state`'s dict into a Trainer built from the same config (a fixed λ may differ)."""
    trainer.epoch = int(state["epoch"])
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    scheduler_state = dict(trainer.scheduler.state_dict())
    scheduler_state.update(state["scheduler"])
    trainer.scheduler.load_state_dict(scheduler_state)
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
    trainer.history = [EpochRecord(**r) for r in state["history"]]
    trainer.step_traces = [StepTrace(**t) for t in state["step_traces"]]
    trainer.best_epoch = int(state["best_epoch"])
    trainer.best_state = state["best_state"]


def save_state(state: dict[str, Any], path: Path | str) -> None:
    """Write atomically: a temp file renamed over the old one, so a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_state(path: Path | str, device: torch.device) -> dict[str, Any]:
    """Read a resume point with `weights_only=True`, its tensors mapped onto `device`."""
    return torch.load(path, map_location=device, weights_only=True)
