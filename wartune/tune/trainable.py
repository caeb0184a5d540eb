"""The Ray Tune function trainable: one engine run, reported and checkpointed every epoch.

Each checkpoint folder holds the trainer's complete resume point (`trainer.pt`, loaded
with `weights_only=True`) and the best-so-far model (`model.safetensors` + `model.json`),
so the latest checkpoint always carries the best weights too, and `progress.json` (its
epoch). On restart (driver resume or a retried failure) the trial continues from its
newest readable checkpoint (`resume.py`).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from ray import tune

from wartune.engine.trainer import DivergedError, EpochRecord, Trainer, best_model_meta
from wartune.results.model_files import save_model_files
from wartune.tune.params import train_config_of
from wartune.tune.resume import (
    TRAINER_FILE,
    checkpoint_epoch,
    resume,
    trial_checkpoints,
    write_progress,
)


def best_epoch_upto(history: list[EpochRecord], epoch: int) -> int:
    """The best epoch among the first `epoch` (highest robust accuracy, earliest on ties), as the trainer keeps it."""
    best = 1
    for record in history[1:epoch]:
        if record.rob_acc > history[best - 1].rob_acc:
            best = record.epoch
    return best


def adversarial_training_trial(params: dict[str, Any]) -> None:
    """Train one model; `tune.report` after every epoch with a checkpoint."""
    started_at = time.time()
    trainer = Trainer(train_config_of(params))
    registered = tune.get_checkpoint()
    point = resume(trainer, trial_checkpoints(registered))
    node_id = ray.get_runtime_context().get_node_id()

    def report(record: EpochRecord, t: Trainer, checkpoint: bool = True) -> None:
        best = best_epoch_upto(t.history, record.epoch)
        metrics = {
            **record.metrics(),
            "best_epoch": best,
            "best_rob_acc": t.history[best - 1].rob_acc,
            "device": t.device.type,
            "precision": t.precision,
            "started_at": started_at,
            "reported_at": time.time(),
            "pid": os.getpid(),
            "node_id": node_id,
            "resumed_from_epoch": point.epoch,
            "resume_note": point.note,
            "steps": asdict(t.step_traces[record.epoch - 1]),
        }
        if not checkpoint:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            t.save(Path(folder) / TRAINER_FILE)
            save_model_files(t.best_state, best_model_meta(t), Path(folder))
            write_progress(Path(folder), t.epoch)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    # Epochs trained and persisted after the last checkpoint Ray registered: the driver may
    # have died before recording them. Report them again (the same records) before going on;
    # a trial that had finished is then done, without training its last epoch again.
    for record in trainer.history[checkpoint_epoch(registered) : trainer.epoch]:
        report(record, trainer, checkpoint=record.epoch == trainer.epoch)
    if trainer.finished:
        return
    try:
        trainer.fit(report)
    except DivergedError as err:
        # Deterministic: retrying would diverge again. Report the reason and stop the trial.
        tune.report(
            {"epoch": trainer.epoch, "rob_acc": 0.0, "best_rob_acc": 0.0, "error": str(err), "device": trainer.device.type}
        )
