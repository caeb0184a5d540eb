"""Which wartune wrote a search folder, and bringing an older folder up to this release.

A CIFAR search runs for days and outlives the release that started it: users upgrade with
`pip install -U` while a search is paused. So every search folder (and a compare's root)
holds `wartune.json`: the release and the table schema (`store.SCHEMA_VERSION`) that last
wrote it. `--resume` then
- refuses, in one line, a folder written by a newer release than the one running (its
  tables or Ray state may hold what this release does not know);
- upgrades a folder written by an older one: each table's renamed columns take their new
  names (`store.RENAMED_*`: schema 4 split the figures into val_* and test_*), its missing
  columns are filled with their documented empty values (`store.ADDED_COLUMNS`) and it is
  written back in this release's schema, the manifest is rewritten, and one line says so. A folder without `wartune.json`
  was written by wartune 0.1.0 (schema 1) or before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from wartune.errors import WartuneError
from wartune.results.store import (
    COMPARE_FILE,
    COMPARE_SCHEMA,
    EPOCH_SCHEMA,
    EPOCHS_FILE,
    SCHEMA_VERSION,
    TRIAL_SCHEMA,
    TRIALS_FILE,
    read_rows,
    upgrade_steps_file,
    upgrade_table,
    write_table,
)
from wartune.version import __version__

MANIFEST_FILE = "wartune.json"
TABLES = ((TRIALS_FILE, TRIAL_SCHEMA), (EPOCHS_FILE, EPOCH_SCHEMA), (COMPARE_FILE, COMPARE_SCHEMA))
BEFORE_MANIFEST = "0.1.0"  # the last release that wrote no manifest (schema 1)


@dataclass(frozen=True)
class WrittenBy:
    """The release and table schema that last wrote a folder."""

    version: str
    schema: int
    recorded: bool = True  # False: no manifest, so 0.1.0 or before

    def describe(self) -> str:
        release = (
            f"wartune {self.version}" if self.recorded else f"wartune {self.version} or before"
        )
        return f"{release} (schema {self.schema})"


THIS_RELEASE = WrittenBy(__version__, SCHEMA_VERSION)


def _release(text: str, path: Path) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise WartuneError(f"{str(path)!r}: {text!r} is not a wartune release") from None


def written_by(folder: Path) -> WrittenBy:
    """What `folder/wartune.json` says wrote the folder; 0.1.0 (schema 1) without one."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return WrittenBy(BEFORE_MANIFEST, 1, recorded=False)
    try:
        data = json.loads(path.read_text())
        found = WrittenBy(str(data["wartune_version"]), int(data["schema_version"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise WartuneError(
            f"{str(path)!r} is not a wartune manifest (wartune_version, schema_version)"
        ) from None
    _release(found.version, path)
    return found


def _manifest_text(data: dict[str, Any]) -> str:
    """One key a line, the validation split's indices on the line of its own key (not one a line)."""
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in data.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


# What schema 4's renaming says of each table (`store.RENAMED_*`)
RENAMED = {
    TRIALS_FILE: "names its figures val_* (chosen on the test split then: selected_on test) and test_*",
    EPOCHS_FILE: "names its figures val_* (measured on the test split then)",
    COMPARE_FILE: "names its figures test_*",
}


def _fill_intervals(folder: Path) -> None:
    """Each upgraded trial row's interval columns, where its figures and their counts are known:
    the test figures' count in the row, the best epoch's in epochs.parquet."""
    from wartune.results.trials import with_intervals

    rows = read_rows(folder / TRIALS_FILE, TRIAL_SCHEMA)
    if not rows:
        return
    counts = {(e["trial_id"], e["epoch"]): e["val_examples"] for e in read_rows(folder / EPOCHS_FILE, EPOCH_SCHEMA)}
    for row in rows:
        if row["val_examples"] is None:
            row["val_examples"] = counts.get((row["trial_id"], row["best_epoch"]))
        for split in ("val", "test"):
            row.update({k: v for k, v in with_intervals(row, split).items() if row.get(k) is None})
    write_table(rows, TRIAL_SCHEMA, folder / TRIALS_FILE)


def validation_record(seed: int, indices: list[int], train_examples: int) -> dict[str, Any]:
    """The manifest's account of a search's validation split: drawn by `seed`, the training
    split's `indices` (in the file's order of the training split as loaded), of `train_examples`."""
    return {"seed": seed, "examples": len(indices), "of_training_images": train_examples, "indices": indices}


def recorded_validation(folder: Path) -> dict[str, Any] | None:
    """The validation split a folder's manifest records (None: none recorded, as before schema 4)."""
    try:
        found = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found.get("validation") if isinstance(found, dict) else None


def check_not_newer(folder: Path) -> None:
    """Refuse a folder that a newer release than this one wrote, before anything runs."""
    found = written_by(folder)
    path = folder / MANIFEST_FILE
    if _release(found.version, path) > _release(__version__, path) or found.schema > SCHEMA_VERSION:
        raise WartuneError(
            f"{str(folder)!r} was written by {found.describe()}, newer than this wartune {__version__} "
            f"(schema {SCHEMA_VERSION}): upgrade wartune (pip install -U wartune) to resume it"
        )


def record(folder: Path, validation: dict[str, Any] | None = None) -> None:
    """Write `wartune.json`: this release and schema wrote the folder (temporary file, then rename).

    `validation` (`validation_record`) says which training images the search holds out; a later
    write keeps what an earlier one recorded.
    """
    data: dict[str, Any] = {"wartune_version": THIS_RELEASE.version, "schema_version": THIS_RELEASE.schema}
    validation = validation or recorded_validation(folder)
    if validation is not None:
        data["validation"] = validation
    tmp = folder / f".{MANIFEST_FILE}.{os.getpid()}.tmp"
    try:
        tmp.write_text(_manifest_text(data))
        tmp.replace(folder / MANIFEST_FILE)
    finally:
        tmp.unlink(missing_ok=True)


def upgrade(folder: Path) -> str | None:
    """Bring a folder an older release wrote to this one's format; the line that says what changed.

    None when this release wrote it already. Refuses a newer folder (`check_not_newer`).
    """
    check_not_newer(folder)
    found = written_by(folder)
    if found == THIS_RELEASE:
        return None
    changes = []
    for name, schema in TABLES:
        renamed, cols = upgrade_table(folder / name, schema)
        if renamed:
            changes.append(f"{name} {RENAMED[name]}")
        if cols:
            shown = ", ".join(cols) if len(cols) <= 4 else f"{len(cols)} columns ({', '.join(cols[:3])}, ...)"
            changes.append(f"{name} gained {shown} (empty: null)")
    upgrade_steps_file(folder)
    _fill_intervals(folder)
    record(folder)
    tables = "; ".join(changes) if changes else "its tables needed no change"
    return f"{str(folder)!r} was written by {found.describe()}; upgraded for wartune {__version__} (schema {SCHEMA_VERSION}): {tables}"
