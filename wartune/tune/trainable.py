"""The Ray Tune function trainable: one engine run, reported and checkpointed every epoch.

Each checkpoint folder holds the trainer's complete resume point (`trainer.pt`, loaded
with `weights_only=True`) and the best-so-far model (`model.safetensors` + `model.json`),
so the latest checkpoint always carries the best weights too, and `progress.json` (its
epoch). On restart (driver resume or a retried failure) the trial continues from its
newest readable checkpoint (`resume.py`). The dataset arrives through Ray's object store,
never from the trial's own disk.
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

from wartune.engine.data import TensorDataset
from wartune.engine.trainer import DivergedError, EpochRecord, Trainer, best_model_meta
from wartune.results.model_files import save_model_files
from wartune.results.trials import FULL_SPLIT_RESULT
from wartune.tune.params import train_config_of
from wartune.tune.resume import (
    TRAINER_FILE,
    checkpoint_epoch,
    resume,
    storage_of_trial,
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


def full_split_result(trainer: Trainer) -> dict[str, Any]:
    """What a finished trial's last report adds: its best weights evaluated on the whole test split.

    It rides on the last epoch's report rather than a report of its own: ASHA stops a trial
    at that epoch (a later report would never reach the driver), and there is no extra
    result to become an epoch row. `best_rob_acc`, the searcher's metric, becomes the
    full-split figure, as trials.parquet's `rob_acc` does (and `best_nat_acc`,
    `best_stability`, a multi-objective search's other metrics, likewise).
    """
    m = trainer.evaluate_best()
    figures = {"nat_acc": m.nat_acc, "rob_acc": m.rob_acc, "stability": m.stability, "lipschitz": m.lipschitz,
               "eval_examples": m.n}  # fmt: skip
    best = {"best_rob_acc": m.rob_acc, "best_nat_acc": m.nat_acc, "best_stability": m.stability}
    return {FULL_SPLIT_RESULT: figures, **best}


def adversarial_training_trial(params: dict[str, Any], data: TensorDataset) -> None:
    """Train one model; `tune.report` after every epoch with a checkpoint.

    `data` comes from Ray's object store (`tune.with_parameters`): the driver loaded it once,
    so a trial on any node, one the autoscaler just added included, never reads --data-dir.
    """
    started_at = time.time()
    trainer = Trainer(train_config_of(params), data)
    registered = tune.get_checkpoint()
    point = resume(trainer, trial_checkpoints(registered), storage_of_trial()[1])
    runtime = ray.get_runtime_context()
    node_id = runtime.get_node_id()
    gpus_assigned = runtime.get_assigned_resources().get("GPU", 0.0)  # a fraction where trials share a GPU

    def report(record: EpochRecord, t: Trainer, checkpoint: bool = True) -> None:
        best = best_epoch_upto(t.history, record.epoch)
        metrics = {
            **record.metrics(),
            "best_epoch": best,
            "best_rob_acc": t.history[best - 1].rob_acc,
            "best_nat_acc": t.history[best - 1].nat_acc,  # the best epoch's (by robust accuracy)
            "best_stability": t.history[best - 1].stability,
            "device": t.device.type,
            "precision": t.precision,
            "graphs": t.graph_mode,
            "started_at": started_at,
            "reported_at": time.time(),
            "pid": os.getpid(),
            "node_id": node_id,
            "gpus_assigned": gpus_assigned,
            "resumed_from_epoch": point.epoch,
            "resume_note": point.note,
            "steps": asdict(t.step_traces[record.epoch - 1]),
        }
        if t.finished and record.epoch == t.epoch:
            metrics.update(full_split_result(t))
        if not checkpoint:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            t.save(Path(folder) / TRAINER_FILE)
            save_model_files(t.best_state, best_model_meta(t), Path(folder))
            write_progress(Path(folder), t.epoch, point.lineage_from)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    # Epochs trained and persisted after the last checkpoint Ray registered: the driver may
    # have died before recording them. Report them again (the same records) before going on,
    # those of this trial's own lineage only (`resume.py`); a trial that had finished is then
    # done, without training its last epoch again.
    for record in trainer.history[max(checkpoint_epoch(registered), point.lineage_from) : trainer.epoch]:
        report(record, trainer, checkpoint=record.epoch == trainer.epoch)
    if trainer.finished:
        return
    try:
        trainer.fit(report)
    except DivergedError as err:
        # Deterministic: retrying would diverge again. Report the reason and stop the trial.
        tune.report(
            {"epoch": trainer.epoch, "rob_acc": 0.0, "best_rob_acc": 0.0, "best_nat_acc": 0.0, "best_stability": 0.0,
             "error": str(err), "device": trainer.device.type}  # fmt: skip
        )
