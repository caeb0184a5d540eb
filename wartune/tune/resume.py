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

A PBT exploit restarts a trial from its donor's checkpoint, so the history in the trial's
later checkpoints begins with the donor's epochs. Each checkpoint therefore names the epoch
its lineage became this trial's own (`lineage_from` in its progress file): only the epochs
after it are this trial's, and only those may be reported again; the donor's earlier
epochs would replace this trial's recorded rows with the donor's.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs
from ray import tune

from wartune.engine.state import load_state
from wartune.engine.trainer import Trainer

if TYPE_CHECKING:
    from ray.train._internal.storage import StorageContext

TRAINER_FILE = "trainer.pt"
PROGRESS_FILE = "progress.json"  # {"epoch": n, "lineage_from": s}: read without loading the trainer state
CHECKPOINT_PREFIX = "checkpoint_"
# What torch.load raises on a truncated or garbled file.
UNREADABLE = (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError, zipfile.BadZipFile)


@dataclass(frozen=True)
class ResumePoint:
    """The epoch a trial continues from, and a note when that was not the newest checkpoint.

    `lineage_from`: the epoch from which the loaded weights are this trial's own training
    (a PBT donor's checkpoint: its epoch; one of this trial's: the lineage it recorded).
    """

    epoch: int
    checkpoint: str | None
    note: str | None
    lineage_from: int = 0


def storage_of_trial() -> tuple[pafs.FileSystem, str]:
    """The running trial's storage filesystem and its folder there."""
    storage = tune.get_context().get_storage()
    return storage.storage_filesystem, storage.trial_fs_path


def _subfolders(fs: pafs.FileSystem, path: str, keep: Callable[[str], bool]) -> list[str]:
    """The folders in `path` whose names `keep` accepts, by name, last first."""
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sorted((i.path for i in infos if i.type == pafs.FileType.Directory and keep(PurePosixPath(i.path).name)), reverse=True)


# Ray names a trial's folder after the trial and the time it was created
# (`<trainable>_<trial id>_<index>_<params>_2026-12-06_19-18-15`).
_CREATED = re.compile(r"_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}$")


def _is_checkpoint(name: str) -> bool:
    return name.startswith(CHECKPOINT_PREFIX)


def same_trial(folder: str, other: str) -> bool:
    """Whether two trial folders are one trial's: its folder now and one an earlier run of it
    wrote (the same name but for the time)."""
    a, b = PurePosixPath(folder).name, PurePosixPath(other).name
    return _CREATED.sub("", a) == _CREATED.sub("", b)


def checkpoint_paths(fs: pafs.FileSystem, trial_path: str) -> list[str]:
    """The checkpoint folders of the trial whose folder is `trial_path`, then those its earlier
    runs left in folders of their own (`same_trial`), each folder's newest first."""
    own = PurePosixPath(trial_path)
    earlier = _subfolders(fs, str(own.parent), lambda name: name != own.name and same_trial(name, own.name))
    return [path for folder in (trial_path, *earlier) for path in _subfolders(fs, folder, _is_checkpoint)]


def _index(checkpoint_folder: str) -> int:
    """The index in a checkpoint folder's name (`checkpoint_000004`: 4; -1 for another name)."""
    digits = PurePosixPath(checkpoint_folder).name.removeprefix(CHECKPOINT_PREFIX)
    return int(digits) if digits.isdigit() else -1


def continue_numbering(storage: StorageContext, own: list[str]) -> None:
    """Name this run's checkpoints after every one the trial's folder already holds (`own`).

    Ray numbers a restarted trial's checkpoints on from the index its experiment snapshot
    recorded, and that snapshot lags the checkpoints on storage (module docstring). The
    restarted trial would then write `checkpoint_000002` again, over a folder it wrote
    before the kill, and a PBT trial whose exploit (`pbt.py`) restores it from that name
    would load the newer state: a donor's later epoch, skipping one of its own. Ray adds one
    to the index before each checkpoint.
    """
    storage.current_checkpoint_index = max([storage.current_checkpoint_index, *map(_index, own)])


def trial_checkpoints(registered: tune.Checkpoint | None) -> list[tune.Checkpoint]:
    """This trial's checkpoint folders on storage, newest first (Ray's own names sort by
    index, and `continue_numbering` keeps them in that order across restarts).

    A trial created after the driver's last experiment snapshot is created again on `--resume`,
    under the same id but in a new folder (named by the time); the checkpoints its earlier run
    left in the old folder come after the new folder's own, the latest run's first.
    """
    storage = tune.get_context().get_storage()
    fs, trial_path = storage.storage_filesystem, storage.trial_fs_path
    paths = checkpoint_paths(fs, trial_path)
    continue_numbering(storage, [path for path in paths if PurePosixPath(path).parent == PurePosixPath(trial_path)])
    found = [tune.Checkpoint(path, filesystem=fs) for path in paths]
    if registered is not None and registered.path not in paths:  # restored from another trial's (PBT)
        # Before this trial's own checkpoints of its epoch or earlier (the lineage it left when
        # PBT moved it), after any it trained since (a driver killed then never registered them).
        at = checkpoint_epoch(registered)
        since = [c for c in found if checkpoint_epoch(c) > at]
        found = [*since, registered, *(c for c in found if c not in since)]
    return found


def write_progress(folder: Path, epoch: int, lineage_from: int = 0, **fields: Any) -> None:
    """A checkpoint's progress file; `fields` adds what a stack records (its dropped members)."""
    (folder / PROGRESS_FILE).write_text(json.dumps({"epoch": epoch, "lineage_from": lineage_from, **fields}))


def _progress(checkpoint: tune.Checkpoint) -> dict[str, Any]:
    try:
        with checkpoint.filesystem.open_input_stream(f"{checkpoint.path}/{PROGRESS_FILE}") as stream:
            progress = json.loads(stream.read())
        return progress if isinstance(progress, dict) else {}
    except (OSError, ValueError):
        return {}


def _epoch_field(checkpoint: tune.Checkpoint | None, key: str) -> int:
    try:
        return int(_progress(checkpoint)[key]) if checkpoint is not None else 0
    except (KeyError, ValueError, TypeError):
        return 0


def checkpoint_epoch(checkpoint: tune.Checkpoint | None) -> int:
    """The epoch a checkpoint holds (0 for none, or one without a readable progress file)."""
    return _epoch_field(checkpoint, "epoch")


def lineage_from(checkpoint: tune.Checkpoint, own_folder: str | None) -> int:
    """The epoch from which `checkpoint`'s weights are the training of the trial whose folder
    is `own_folder`: a checkpoint of another trial (a PBT donor's) hands over its epoch; one of
    the trial's own, the lineage it recorded (0: a 0.2.0 checkpoint, or never exploited)."""
    if own_folder is not None and not same_trial(str(PurePosixPath(checkpoint.path).parent), own_folder):
        return checkpoint_epoch(checkpoint)
    return _epoch_field(checkpoint, "lineage_from")


def _newest_readable(candidates: list[tune.Checkpoint], load: Callable[[str], int]) -> tuple[ResumePoint, tune.Checkpoint | None]:
    """Load the first of `candidates` that `load` reads whole (it gets the local folder and
    returns the epoch it restored); a note names any skipped as unreadable."""
    skipped: list[str] = []
    for checkpoint in candidates:
        name = PurePosixPath(checkpoint.path).name
        try:
            with checkpoint.as_directory() as folder:
                epoch = load(folder)
        except UNREADABLE as err:
            skipped.append(f"{name} unreadable ({type(err).__name__})")
            continue
        note = f"{'; '.join(skipped)}; resumed from {name} (epoch {epoch})" if skipped else None
        return ResumePoint(epoch, name, note), checkpoint
    note = f"{'; '.join(skipped)}; restarted from epoch 0" if skipped else None
    return ResumePoint(0, None, note), None


def resume(trainer: Trainer, candidates: list[tune.Checkpoint], own_folder: str | None = None) -> ResumePoint:
    """Load the newest readable checkpoint of `candidates` into `trainer` (nothing: epoch 0);
    `own_folder` (the trial's) tells its own checkpoints from a PBT donor's."""

    def load(folder: str) -> int:
        trainer.load_state_dict(load_state(f"{folder}/{TRAINER_FILE}", trainer.device))
        return trainer.epoch

    point, checkpoint = _newest_readable(candidates, load)
    return point if checkpoint is None else replace(point, lineage_from=lineage_from(checkpoint, own_folder))


def member_folder(index: int) -> str:
    """Where a stack's checkpoint keeps member `index`'s files: exactly its lone trial's."""
    return f"member-{index}"


@dataclass
class StackProgress:
    """What a stack's checkpoint records beside its members: the members it dropped (each with
    why: they resume at their last good epoch and are not stacked again), and, in a PBT stack,
    the epoch each exploited member's own lineage begins (the epochs before are its donor's),
    the λ each member's checkpoint trained on with (an exploit's, where PBT moved it: a
    fixed λ is loaded from the config, never the checkpoint, so a PBT stack sets it back), and
    the reports of the members an exploit moved at the checkpoint's epoch: their own epoch,
    which the checkpoint's state (the donor's, from then on) no longer holds."""

    dropped: dict[int, str] = field(default_factory=dict)
    lineage: dict[int, int] = field(default_factory=dict)
    lambdas: dict[int, float] = field(default_factory=dict)
    moved_reports: dict[int, dict[str, Any]] = field(default_factory=dict)


def resume_stack(trainers: list[Trainer], candidates: list[tune.Checkpoint]) -> tuple[ResumePoint, StackProgress]:
    """Load the newest checkpoint of a stack whose members all read into `trainers` (each
    member's whole state is read before any is loaded), and the stack's progress."""
    progress_read = StackProgress()

    def load(folder: str) -> int:
        states = [load_state(f"{folder}/{member_folder(i)}/{TRAINER_FILE}", t.device) for i, t in enumerate(trainers)]
        progress = json.loads(Path(folder, PROGRESS_FILE).read_text())
        for trainer, state in zip(trainers, states, strict=True):
            trainer.load_state_dict(state)
        progress_read.dropped = {int(i): str(why) for i, why in progress.get("dropped", {}).items()}
        progress_read.lineage = {int(i): int(epoch) for i, epoch in progress.get("lineage", {}).items()}
        progress_read.lambdas = {i: float(state["controller"]["value"]) for i, state in enumerate(states)}
        progress_read.moved_reports = {int(i): report for i, report in progress.get("moved_reports", {}).items()}
        return int(progress["epoch"])

    point, _ = _newest_readable(candidates, load)
    return point, progress_read
