"""Where a restarted trial continues: the newest of its checkpoints that can be read.

Ray hands a restarted trial the checkpoint its experiment snapshot registered, and it
registers a checkpoint only after the driver's callbacks have run for that result and the
next snapshot is written. A driver killed in between leaves newer checkpoints on storage
that Ray does not know, while the Parquet tables may or may not hold their epochs;
continuing from Ray's checkpoint would train those epochs again (for a trial that had
finished, its last one). `tune.report` persists every checkpoint before the driver hears
of its result, so the trial continues from its newest readable checkpoint folder and
reports the epochs after Ray's registered one again, from the history the checkpoint
holds (the tables replace those rows with the same values). A truncated or unreadable
checkpoint falls back to the one before it (Ray keeps two), else to epoch 0.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import pyarrow.fs as pafs
from ray import tune

from wartune.engine.state import load_state
from wartune.engine.trainer import Trainer

TRAINER_FILE = "trainer.pt"
PROGRESS_FILE = "progress.json"  # {"epoch": n}: read without loading the trainer state
CHECKPOINT_PREFIX = "checkpoint_"
# What torch.load raises on a truncated or garbled file.
UNREADABLE = (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)


@dataclass(frozen=True)
class ResumePoint:
    """The epoch a trial continues from, and a note when that was not the newest checkpoint."""

    epoch: int
    checkpoint: str | None
    note: str | None


def trial_checkpoints(registered: tune.Checkpoint | None) -> list[tune.Checkpoint]:
    """This trial's checkpoint folders on storage, newest first (Ray's own names sort by index)."""
    storage = tune.get_context().get_storage()
    fs, trial_path = storage.storage_filesystem, storage.trial_fs_path
    infos = fs.get_file_info(pafs.FileSelector(trial_path, allow_not_found=True))
    paths = sorted(
        (i.path for i in infos if i.type == pafs.FileType.Directory and PurePosixPath(i.path).name.startswith(CHECKPOINT_PREFIX)),
        reverse=True,
    )
    found = [tune.Checkpoint(path, filesystem=fs) for path in paths]
    if registered is not None and registered.path not in paths:  # restored from another trial's (PBT)
        # Before this trial's own checkpoints of its epoch or earlier (the lineage it left when
        # PBT moved it), after any it trained since (a driver killed then never registered them).
        at = checkpoint_epoch(registered)
        since = [c for c in found if checkpoint_epoch(c) > at]
        found = [*since, registered, *(c for c in found if c not in since)]
    return found


def write_progress(folder: Path, epoch: int) -> None:
    (folder / PROGRESS_FILE).write_text(json.dumps({"epoch": epoch}))


def checkpoint_epoch(checkpoint: tune.Checkpoint | None) -> int:
    """The epoch a checkpoint holds (0 for none, or one without a readable progress file)."""
    if checkpoint is None:
        return 0
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{PROGRESS_FILE}") as stream:
            return int(json.loads(stream.read())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _read(checkpoint: tune.Checkpoint, trainer: Trainer) -> dict[str, Any]:
    with checkpoint.as_directory() as folder:
        return load_state(f"{folder}/{TRAINER_FILE}", trainer.device)


def resume(trainer: Trainer, candidates: list[tune.Checkpoint]) -> ResumePoint:
    """Load the newest readable checkpoint of `candidates` into `trainer` (nothing: epoch 0)."""
    skipped: list[str] = []
    for checkpoint in candidates:
        name = PurePosixPath(checkpoint.path).name
        try:
            state = _read(checkpoint, trainer)
        except UNREADABLE as err:
            skipped.append(f"{name} unreadable ({type(err).__name__})")
            continue
        trainer.load_state_dict(state)
        note = f"{'; '.join(skipped)}; resumed from {name} (epoch {trainer.epoch})" if skipped else None
        return ResumePoint(trainer.epoch, name, note)
    note = f"{'; '.join(skipped)}; restarted from epoch 0" if skipped else None
    return ResumePoint(0, None, note)
