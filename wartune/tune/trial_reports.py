"""What a trial reports each epoch and writes into each checkpoint: shared by the lone
trainable (`trainable.py`) and the stacked one (`stacked_trainable.py`), so a stack's member
reports exactly what its lone trial would."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray

from wartune.engine.trainer import DivergedError, EpochRecord, Trainer, best_model_meta
from wartune.results.model_files import save_model_files
from wartune.results.trials import TEST_RESULT, encode_flags
from wartune.tune.resume import TRAINER_FILE, ResumePoint, write_progress


def best_epoch_upto(history: list[EpochRecord], epoch: int) -> int:
    """The best epoch among the first `epoch` (highest validation robust accuracy, earliest on
    ties), as the trainer keeps it."""
    best = 1
    for record in history[1:epoch]:
        if record.val_rob_acc > history[best - 1].val_rob_acc:
            best = record.epoch
    return best


def test_result(trainer: Trainer) -> dict[str, Any]:
    """What a finished trial's last report adds: its best weights read once on the whole test split.

    It rides on the last epoch's report rather than a report of its own: ASHA stops a trial
    at that epoch (a later report would never reach the driver), and there is no extra
    result to become an epoch row. The searcher's metrics (`best_rob_acc`, `best_nat_acc`,
    `best_stability`) stay the best epoch's validation figures: no choice reads the test split.
    """
    reading = trainer.evaluate_test()
    m = reading.metrics
    figures = {"test_nat_acc": m.nat_acc, "test_rob_acc": m.rob_acc, "test_stability": m.stability,
               "test_lipschitz": m.lipschitz, "test_examples": m.n,
               "test_robust": encode_flags(reading.flags.robust), "test_correct": encode_flags(reading.flags.correct)}  # fmt: skip
    return {TEST_RESULT: figures}


@dataclass(frozen=True)
class TrialPlace:
    """Where and since when a trial runs, as every report of it says."""

    started_at: float
    node_id: str
    gpus_assigned: float  # a fraction where trials share a GPU
    point: ResumePoint

    @classmethod
    def here(cls, started_at: float, point: ResumePoint) -> TrialPlace:
        runtime = ray.get_runtime_context()
        return cls(started_at, runtime.get_node_id(), runtime.get_assigned_resources().get("GPU", 0.0), point)


def epoch_metrics(record: EpochRecord, t: Trainer, place: TrialPlace) -> dict[str, Any]:
    """One epoch's report of one trial (a stack reports one per member)."""
    best = best_epoch_upto(t.history, record.epoch)
    metrics = {
        **record.metrics(),
        "best_epoch": best,
        "best_rob_acc": t.history[best - 1].val_rob_acc,  # the searcher's metric: validation only
        "best_nat_acc": t.history[best - 1].val_nat_acc,  # the best epoch's (by validation robust accuracy)
        "best_stability": t.history[best - 1].val_stability,
        "device": t.device.type,
        "precision": t.precision,
        "graphs": t.graph_mode,
        "started_at": place.started_at,
        "reported_at": time.time(),
        "pid": os.getpid(),
        "node_id": place.node_id,
        "gpus_assigned": place.gpus_assigned,
        "resumed_from_epoch": place.point.epoch,
        "resume_note": place.point.note,
        "steps": asdict(t.step_traces[record.epoch - 1]),
    }
    if t.finished and record.epoch == t.epoch:
        metrics.update(test_result(t))
    return metrics


def diverged_metrics(t: Trainer, err: DivergedError) -> dict[str, Any]:
    """The report of a trial whose loss diverged: deterministic, so it is not retried."""
    return {"epoch": t.epoch, "val_rob_acc": 0.0, "best_rob_acc": 0.0, "best_nat_acc": 0.0, "best_stability": 0.0,
            "error": str(err), "device": t.device.type}  # fmt: skip


def save_trial_files(folder: Path, t: Trainer, lineage: int = 0) -> None:
    """A trial's resume point, its best-so-far model and its progress, into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    t.save(folder / TRAINER_FILE)
    if t.history:  # a stack's member that diverged in its first epoch has no best model
        save_model_files(t.best_state, best_model_meta(t), folder)
    write_progress(folder, t.epoch, lineage)
