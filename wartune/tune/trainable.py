"""The Ray Tune function trainable: one engine run, reported and checkpointed every epoch.

Each checkpoint folder holds the trainer's complete resume point (`trainer.pt`, loaded
with `weights_only=True`) and the best-so-far model (`model.safetensors` + `model.json`),
so the latest checkpoint always carries the best weights too. On restart (driver resume
or a retried failure) the trial continues from `tune.get_checkpoint()`.
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

TRAINER_FILE = "trainer.pt"


def adversarial_training_trial(params: dict[str, Any]) -> None:
    """Train one model; `tune.report` after every epoch with a checkpoint."""
    started_at = time.time()
    trainer = Trainer(train_config_of(params))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load(Path(folder) / TRAINER_FILE)
    resumed_from_epoch = trainer.epoch
    node_id = ray.get_runtime_context().get_node_id()

    def report(record: EpochRecord, t: Trainer) -> None:
        metrics = {
            **record.metrics(),
            "best_epoch": t.best_epoch,
            "best_rob_acc": t.history[t.best_epoch - 1].rob_acc,
            "device": t.device.type,
            "started_at": started_at,
            "reported_at": time.time(),
            "pid": os.getpid(),
            "node_id": node_id,
            "resumed_from_epoch": resumed_from_epoch,
            "steps": asdict(t.step_traces[-1]),
        }
        with tempfile.TemporaryDirectory() as folder:
            t.save(Path(folder) / TRAINER_FILE)
            save_model_files(t.best_state, best_model_meta(t), Path(folder))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        trainer.fit(report)
    except DivergedError as err:
        # Deterministic: retrying would diverge again. Report the reason and stop the trial.
        tune.report(
            {"epoch": trainer.epoch, "rob_acc": 0.0, "best_rob_acc": 0.0, "error": str(err), "device": trainer.device.type}
        )
