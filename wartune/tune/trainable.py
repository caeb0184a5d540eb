"""The Ray Tune function trainable: one engine run, reported and checkpointed every epoch.

Each checkpoint folder holds the trainer's complete resume point (`trainer.pt`, loaded
with `weights_only=True`) and the best-so-far model (`model.safetensors` + `model.json`),
so the latest checkpoint always carries the best weights too, and `progress.json` (its
epoch). On restart (driver resume or a retried failure) the trial continues from its
newest readable checkpoint (`resume.py`). The dataset arrives through Ray's object store,
never from the trial's own disk.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from wartune.engine.data import TensorDataset
from wartune.engine.trainer import DivergedError, EpochRecord, Trainer
from wartune.tune.params import train_config_of
from wartune.tune.resume import checkpoint_epoch, resume, storage_of_trial, trial_checkpoints
from wartune.tune.stacked_trainable import stacked_training_trial
from wartune.tune.stacks import is_stack
from wartune.tune.trial_reports import TrialPlace, diverged_metrics, epoch_metrics, save_trial_files


def adversarial_training_trial(params: dict[str, Any], data: TensorDataset) -> None:
    """Train one model (or one stack of them); `tune.report` after every epoch with a checkpoint.

    `data` comes from Ray's object store (`tune.with_parameters`): the driver loaded it once,
    so a trial on any node, one the autoscaler just added included, never reads --data-dir.
    A stack's config (`stacks.py`) trains its members as one network (`stacked_trainable.py`).
    """
    if is_stack(params):
        stacked_training_trial(params, data)
        return
    started_at = time.time()
    trainer = Trainer(train_config_of(params), data)
    registered = tune.get_checkpoint()
    point = resume(trainer, trial_checkpoints(registered), storage_of_trial()[1])
    place = TrialPlace.here(started_at, point)

    def report(record: EpochRecord, t: Trainer, checkpoint: bool = True) -> None:
        metrics = epoch_metrics(record, t, place)
        if not checkpoint:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            save_trial_files(Path(folder), t, point.lineage_from)
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
        tune.report(diverged_metrics(trainer, err))

