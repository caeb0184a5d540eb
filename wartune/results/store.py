"""Parquet tables of a search, with their pyarrow schemas declared once.

`epochs.parquet` (one row per trial × epoch), `trials.parquet` (one row per trial) and
`steps.parquet` (one row per training step: the λ_t trace). These files are the source
of truth for results; MLflow and reports are derived from them. Every write is atomic
(temporary file, then rename), so a killed search never leaves a torn table.

`steps.parquet` is a folder (a pyarrow dataset) with one file per trial and epoch, so a
search appends each epoch's trace instead of rewriting every earlier step: writing epoch
100 costs what writing epoch 1 did. `pq.read_table` and `pd.read_parquet` read the
folder as one table. The two small tables stay single files.

A file that is not the table it should be (truncated, not Parquet, other columns) is a
one-line `WartuneError` naming it, never a traceback.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq

from wartune.errors import WartuneError

INTERVAL_FIGURES = ("nat_acc", "rob_acc", "stability")
# trials.parquet's columns of the settings a search beyond λ tunes (with `eps`, a key column)
TUNED_COLUMNS = ("lr", "weight_decay", "attack_steps", "attack_step", "batch_size")


def _interval_columns(split: str) -> list[tuple[str, pa.DataType]]:
    """`<split>_<figure>_lo` and `_hi` of each accuracy and the stability: a 95 % interval each."""
    return [(f"{split}_{figure}_{end}", pa.float64()) for figure in INTERVAL_FIGURES for end in ("lo", "hi")]


# The schemas below are declarations, one per table, and several repeat a run of the same
# columns (model, dataset, eps; figures as float64): each table stands whole in a reader's
# tool (pandas, DuckDB, Spark), so the repetition is the tables' layout, not logic to share.
_TRIAL_KEY = [
    ("search", pa.string()),
    ("trial_id", pa.string()),
    ("strategy", pa.string()),
    ("model", pa.string()),
    ("width", pa.float64()),
    ("dataset", pa.string()),
    ("objective", pa.string()),
    ("eps", pa.float64()),
    ("seed", pa.int64()),
]

EPOCH_SCHEMA = pa.schema(
    _TRIAL_KEY
    + [
        ("lambda_setting", pa.float64()),  # the fixed λ of the trial; null for WAR
        ("epoch", pa.int64()),
        # the epoch's evaluation on the validation split (on the test split in a folder from
        # before schema 4, where `val_` was not in the names: trials.parquet's selected_on says)
        ("val_nat_acc", pa.float64()),
        ("val_rob_acc", pa.float64()),
        ("val_stability", pa.float64()),
        ("val_lipschitz", pa.float64()),
        ("train_lipschitz", pa.float64()),
        ("l_nat", pa.float64()),
        ("l_rob", pa.float64()),
        ("zeta", pa.float64()),
        ("zeta_step_std", pa.float64()),
        ("lambda_mean", pa.float64()),
        ("lambda_last", pa.float64()),
        ("lambda_min", pa.float64()),
        ("lambda_max", pa.float64()),
        ("lr", pa.float64()),
        ("wall_seconds", pa.float64()),
        ("val_examples", pa.int64()),  # validation examples this epoch was evaluated on
        ("war_skipped_steps", pa.int64()),  # WAR steps with l_rob vanished (λ_t kept); 0 for fixed λ
        ("stack", pa.string()),  # the Ray trial whose stack trained it (tune/stacks.py); null: trained alone
    ]
)

TRIAL_SCHEMA = pa.schema(
    _TRIAL_KEY
    + [
        ("lambda_setting", pa.float64()),
        ("lambda_final", pa.float64()),  # λ at the end of training (WAR: its last λ_t)
        ("lambda_settled_epoch", pa.int64()),  # WAR: first epoch from which λ_t stays within 10 % of lambda_final
        ("war_skipped_steps", pa.int64()),  # WAR: steps skipped because l_rob vanished, all epochs
        ("zeta", pa.float64()),  # l_nat / l_rob epoch means, last epoch
        ("zeta_step_std", pa.float64()),
        ("zeta_from", pa.string()),
        ("zeta_used", pa.float64()),  # WAR's target ζ; null for fixed λ
        ("best_epoch", pa.int64()),  # by the validation robust accuracy
        ("epochs", pa.int64()),
        # which split chose the best epoch (and the search's best trial): "validation"; "test" for a
        # trial that wartune 0.2.0 or before began, whose choices read the test split (its val_* are test figures)
        ("selected_on", pa.string()),
        # the best epoch's figures on the validation split, with their 95 % Wilson intervals
        ("val_nat_acc", pa.float64()),
        ("val_rob_acc", pa.float64()),
        ("val_stability", pa.float64()),
        ("val_examples", pa.int64()),
        *_interval_columns("val"),
        # the last epoch's figures on the validation split
        ("final_val_nat_acc", pa.float64()),
        ("final_val_rob_acc", pa.float64()),
        ("final_val_stability", pa.float64()),
        # the trial's result: the best epoch's weights, read once on the whole test split when the
        # trial finished (null before, and for a trial stopped early or failed), with 95 % Wilson intervals
        ("test_nat_acc", pa.float64()),
        ("test_rob_acc", pa.float64()),
        ("test_stability", pa.float64()),
        ("test_lipschitz", pa.float64()),
        ("test_examples", pa.int64()),
        *_interval_columns("test"),
        # each test example's flags, bit-packed, base64 (results/intervals.py): paired comparisons
        ("test_robust", pa.string()),
        ("test_correct", pa.string()),
        # on the trade-off front of its model's finished trials, by the objectives `pareto_by`
        # names (comma-separated: the search's objectives, else rob_acc,nat_acc); pareto.py
        ("pareto", pa.bool_()),
        ("pareto_by", pa.string()),
        ("wall_seconds", pa.float64()),
        ("device_seconds", pa.float64()),
        ("device", pa.string()),
        ("precision", pa.string()),  # fp32 / bf16 / fp16, as the trial resolved it
        ("graphs", pa.string()),  # how its step ran: off / eager / captured / failed: why (Trainer.graph_mode)
        ("cpus", pa.float64()),
        ("gpus", pa.float64()),
        ("started_at", pa.float64()),  # unix seconds, when the trial (last) started
        ("ended_at", pa.float64()),  # unix seconds of its last report
        ("restarts", pa.int64()),  # retries after a crash (Ray's num_failures)
        ("resumed_from_epoch", pa.int64()),  # epoch of the checkpoint its last run resumed from
        ("resume_note", pa.string()),  # set when a newer checkpoint was unreadable (which, and where it resumed)
        ("node", pa.string()),  # Ray node id that ran it (last)
        ("status", pa.string()),
        ("error", pa.string()),
        ("checkpoint", pa.string()),
        ("stack", pa.string()),  # the Ray trial whose stack trained it (tune/stacks.py); null: trained alone
        # standard AutoAttack on the best weights at the search's end (final_attack; tune/final_verdict.py):
        # robust accuracy, test examples and device-seconds; null for a trial it did not attack
        ("aa_rob_acc", pa.float64()),
        ("aa_examples", pa.int64()),
        ("aa_seconds", pa.float64()),
        ("wartune_version", pa.string()),  # the release whose driver last ran the trial (0.2.0 on)
        # the optimiser's and training attack's settings, as a search beyond λ chose them (eps: above)
        ("lr", pa.float64()),
        ("weight_decay", pa.float64()),
        ("attack_steps", pa.int64()),
        ("attack_step", pa.float64()),
        ("batch_size", pa.int64()),
    ]
)

STEP_SCHEMA = pa.schema(
    [
        ("search", pa.string()),
        ("trial_id", pa.string()),
        ("epoch", pa.int64()),
        ("step", pa.int64()),
        ("l_nat", pa.float64()),
        ("l_rob", pa.float64()),
        ("lambda_t", pa.float64()),
    ]
)

EVAL_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("attack", pa.string()),
        ("eps", pa.float64()),
        ("nat_acc", pa.float64()),
        ("rob_acc", pa.float64()),
        ("stability", pa.float64()),
        ("examples", pa.int64()),
        ("attack_seed", pa.int64()),  # the attacks' seed: the best epoch's evaluation seed by default
        ("pgd_steps", pa.int64()),  # the evaluation PGD the attacks were bounded and sized by
        ("pgd_step", pa.float64()),
        ("evaluated_at", pa.string()),  # when (UTC): each `evaluate` appends its rows
        ("budget", pa.string()),  # what the attack spent per example: steps, step size, queries, restarts
    ]
)

ZETA_SCHEMA = pa.schema(
    [
        ("model", pa.string()),
        ("dataset", pa.string()),
        ("objective", pa.string()),
        ("eps", pa.float64()),
        ("best_lambda", pa.float64()),
        ("zeta", pa.float64()),
        ("zeta_step_std", pa.float64()),
        ("rob_acc", pa.float64()),
        ("nat_acc", pa.float64()),
        ("stability", pa.float64()),
        ("search", pa.string()),
        ("source", pa.string()),
        ("created_at", pa.string()),
        # what the choice stood on: the chosen λ's validation robust accuracy (its seeds' mean),
        # the λ grid, epochs and seeds of the calibration (null: an entry from before schema 4)
        ("val_rob_acc", pa.float64()),
        ("calibration_lambdas", pa.string()),
        ("calibration_epochs", pa.int64()),
        ("calibration_seeds", pa.int64()),
    ]
)

COMPARE_SCHEMA = pa.schema(
    [
        ("compare", pa.string()),
        ("strategy", pa.string()),
        ("model", pa.string()),
        ("width", pa.float64()),
        ("seed", pa.int64()),  # one row per seed with --seeds
        ("lambda_final", pa.float64()),
        ("lambda_settled_epoch", pa.int64()),  # WAR only
        ("val_rob_acc", pa.float64()),  # the best trial's (chosen by it) on the validation split
        ("test_nat_acc", pa.float64()),  # the best trial's, its one reading of the whole test split
        ("test_rob_acc", pa.float64()),
        ("test_rob_acc_lo", pa.float64()),  # 95 % Wilson interval
        ("test_rob_acc_hi", pa.float64()),
        # test robust accuracy minus the grid's best trial's (same model and seed) on the same test
        # images, with its paired 95 % interval (Newcombe); null for the grid, or without flags
        ("rob_vs_grid", pa.float64()),
        ("rob_vs_grid_lo", pa.float64()),
        ("rob_vs_grid_hi", pa.float64()),
        ("aa_rob_acc", pa.float64()),  # the best trial's AutoAttack figure; null when it was not attacked
        ("test_stability", pa.float64()),
        ("trials", pa.int64()),
        ("device_seconds", pa.float64()),  # the strategy's own trials
        ("calibration_seconds", pa.float64()),  # thin-net tuning it relied on
        ("total_seconds", pa.float64()),
        ("cost_vs_grid", pa.float64()),
        ("aa_seconds", pa.float64()),  # AutoAttack on the strategy's attacked trials: not in total_seconds
        ("best_trial", pa.string()),
    ]
)

TRIAL_KEY_COLUMNS = tuple(name for name, _ in _TRIAL_KEY)

# The tables' layout, one number: 1 is what wartune 0.1.0 (and a folder without `wartune.json`)
# wrote; 2 (0.2.0) added trials.parquet's `wartune_version`; 3 added trials.parquet's and
# epochs.parquet's `stack` (stacked λ-trials, tune/stacks.py); 4 split every figure into the
# validation split's (`val_*`, which chose) and the test split's (`test_*`, read once), with intervals.
# A search folder records it (`results/manifest.py`); a newer release resumes an older folder by
# renaming `RENAMED_COLUMNS` and filling in `ADDED_COLUMNS`.
SCHEMA_VERSION = 4

# Columns a table gained after wartune first wrote it, each with its documented empty value:
# what a row written before holds. Such a table reads with them filled in, and a resumed search
# writes it back in the current schema (`upgrade_table`).
ADDED_COLUMNS: dict[str, Any] = {
    "pareto": None,  # marked anew at the table's next write
    "pareto_by": None,
    "aa_rob_acc": None,  # null: not attacked by the search's end
    "aa_examples": None,
    "aa_seconds": None,
    "graphs": None,  # null: run by a release before 0.2.0, which had no CUDA graphs
    "wartune_version": None,  # null: last run by a release before 0.2.0, which did not record it
    "stack": None,  # null: trained alone (no table before schema 3 held a stacked trial)
    "attack_seed": None,  # evaluation.parquet before schema 3: its seed was not recorded
    "pgd_steps": None,
    "pgd_step": None,
    "evaluated_at": None,
    "budget": None,  # evaluation.parquet before 0.3.0: the attacks' budgets were not recorded
    "lr": None,  # trials.parquet before 0.3.0: the space's settings, in space.yaml
    "weight_decay": None,
    "attack_steps": None,
    "attack_step": None,
    "batch_size": None,
    "selected_on": "test",  # a trial of schema 3 or before: its choices read the test split
    "val_examples": None,  # trials.parquet before schema 4: on epochs.parquet's rows only
    "val_rob_acc": None,  # compare.parquet and zeta.parquet before schema 4: chosen on the test split
    "calibration_lambdas": None,  # zeta.parquet before schema 4: not recorded
    "calibration_epochs": None,
    "calibration_seeds": None,
    "rob_vs_grid": None,
    "rob_vs_grid_lo": None,
    "rob_vs_grid_hi": None,
    "test_robust": None,  # the flags of a test reading were not kept before schema 4
    "test_correct": None,
    **{name: None for name, _ in _interval_columns("val") + _interval_columns("test")},  # manifest.upgrade fills them in
}

# Columns schema 4 renamed, per table (`upgrade_table`). Before it, epochs.parquet's figures and
# trials.parquet's best_epoch_* were on the per-epoch test subset (the choices' split then: their
# rows say selected_on "test"); trials.parquet's nat_acc... were the whole test split's when
# metrics_from said "full_split", else the best epoch's figures again.
RENAMED_EPOCH_COLUMNS = {"nat_acc": "val_nat_acc", "rob_acc": "val_rob_acc", "stability": "val_stability",
                         "lipschitz": "val_lipschitz", "eval_examples": "val_examples"}  # fmt: skip
RENAMED_TRIAL_COLUMNS = {
    "best_epoch_nat_acc": "val_nat_acc", "best_epoch_rob_acc": "val_rob_acc", "best_epoch_stability": "val_stability",
    "final_nat_acc": "final_val_nat_acc", "final_rob_acc": "final_val_rob_acc", "final_stability": "final_val_stability",
}  # fmt: skip
OLD_FULL_SPLIT = {"nat_acc": "test_nat_acc", "rob_acc": "test_rob_acc", "stability": "test_stability",
                  "lipschitz": "test_lipschitz", "eval_examples": "test_examples"}  # fmt: skip

# The files of a search folder (`runs/<name>/`) and of the output root (`runs/`).
EPOCHS_FILE, TRIALS_FILE, STEPS_FILE = "epochs.parquet", "trials.parquet", "steps.parquet"
COMPARE_FILE, COMPARE_MD = "compare.parquet", "compare.md"
SUMMARY_FILE, SPACE_FILE = "summary.md", "space.yaml"
MODELS_DIR, PLOTS_DIR = "models", "plots"
ZETA_FILE = "zeta.parquet"


def to_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as a table of exactly `schema`: a missing or extra column is an error."""
    rows = list(rows)
    names = set(schema.names)
    for row in rows:
        if set(row) != names:
            missing, extra = sorted(names - set(row)), sorted(set(row) - names)
            raise ValueError(f"row does not match schema: missing {missing}, extra {extra}")
    return pa.Table.from_pylist(rows, schema=schema)


def write_table(rows: Iterable[Mapping[str, Any]], schema: pa.Schema, path: Path) -> None:
    """Validate against the schema and replace `path` atomically."""
    _write_atomic(to_table(rows, schema), path)


def _write_atomic(table: pa.Table, path: Path) -> None:
    # A leading dot: pyarrow's dataset discovery skips the file while it is being written.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read_table(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """A Parquet file, or a folder of them read as one table (`schema` fixes its columns)."""
    try:
        return pq.read_table(path, schema=schema)
    except (pa.ArrowException, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise WartuneError(f"{str(path)!r} is not a readable Parquet table ({reason})") from None


def read_rows(path: Path, schema: pa.Schema) -> list[dict[str, Any]]:
    """Rows of a table written by `write_table`; empty when the file does not exist."""
    if not path.exists():
        return []
    if not path.is_file():
        raise WartuneError(f"{str(path)!r} is not a file: expected a Parquet table there")
    table = _with_added_columns(read_table(path), schema)
    if not table.schema.equals(schema, check_metadata=False):
        missing = sorted(set(schema.names) - set(table.column_names))
        extra = sorted(set(table.column_names) - set(schema.names))
        raise WartuneError(
            f"{str(path)!r} does not have the columns wartune expects "
            f"(missing {missing}, extra {extra}, or other types): written by another program or version?"
        )
    return table.to_pylist()


def renamed_to_current(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table of schema 3 or before with schema 4's names (`RENAMED_*`, `OLD_FULL_SPLIT`); others as they are."""
    if schema.equals(EPOCH_SCHEMA) and "rob_acc" in table.column_names:
        return table.rename_columns([RENAMED_EPOCH_COLUMNS.get(n, n) for n in table.column_names])
    if schema.equals(COMPARE_SCHEMA) and "rob_acc" in table.column_names:
        return table.rename_columns([OLD_FULL_SPLIT.get(n, n) for n in table.column_names])
    if not (schema.equals(TRIAL_SCHEMA) and "metrics_from" in table.column_names):
        return table
    full = pa.compute.equal(table["metrics_from"], "full_split").fill_null(False).to_pylist()
    for old, new in OLD_FULL_SPLIT.items():
        values = [v if f else None for v, f in zip(table[old].to_pylist(), full, strict=True)]
        table = table.append_column(schema.field(new), pa.array(values, schema.field(new).type))
    table = table.drop_columns([*OLD_FULL_SPLIT, "metrics_from"])
    return table.rename_columns([RENAMED_TRIAL_COLUMNS.get(n, n) for n in table.column_names])


def _with_added_columns(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` with the `ADDED_COLUMNS` it lacks, holding their empty values, in the schema's column order."""
    table = renamed_to_current(table, schema)
    missing = _added_missing(table, schema)
    if not missing:
        return table
    for field in missing:
        table = table.append_column(field, pa.array([ADDED_COLUMNS[field.name]] * len(table), field.type))
    return table.select(schema.names) if set(table.column_names) == set(schema.names) else table


def _added_missing(table: pa.Table, schema: pa.Schema) -> list[pa.Field]:
    return [schema.field(name) for name in schema.names if name in ADDED_COLUMNS and name not in table.column_names]


def upgrade_table(path: Path, schema: pa.Schema) -> tuple[bool, list[str]]:
    """Write a table from an older wartune back in `schema`, its columns renamed (`RENAMED_*`) and
    its missing ones filled with their empty values (atomically): whether it renamed any, and the
    columns it gained. A table already current is left untouched."""
    if not path.is_file():
        return False, []
    table = read_table(path)
    missing = [field.name for field in _added_missing(renamed_to_current(table, schema), schema)]
    renamed = bool(set(table.column_names) - set(schema.names))
    if missing or renamed:
        write_table(read_rows(path, schema), schema, path)
    return renamed, missing


_STEP_NAME = re.compile(r"(?P<trial>.+)-e(?P<epoch>\d{4,})\.parquet")


def step_file(folder: Path, trial_id: str, epoch: int) -> Path:
    """The file of one trial's epoch inside the `steps.parquet` folder."""
    return folder / STEPS_FILE / _step_name(trial_id, epoch)


def _step_name(trial_id: str, epoch: int) -> str:
    return f"{trial_id}-e{epoch:04d}.parquet"


def write_steps(rows: Iterable[Mapping[str, Any]], folder: Path, trial_id: str, epoch: int) -> None:
    """Write (or, for an epoch reported again after a resume, replace) one trial-epoch's steps."""
    path = step_file(folder, trial_id, epoch)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table(rows, STEP_SCHEMA, path)


def upgrade_steps_file(folder: Path) -> None:
    """Turn a single-file steps.parquet (written by wartune before the folder layout) into
    the folder, so an older search can be resumed.

    The new folder is built under a hidden name that holds the old file before it takes
    the old file's place, so a process killed at any point loses no step.
    """
    path, staging = folder / STEPS_FILE, folder / f".{STEPS_FILE}.upgrade"
    legacy = staging / ".legacy.parquet"  # hidden: readers of the folder skip it
    if path.is_file():
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        table = read_table(path).sort_by([("trial_id", "ascending"), ("epoch", "ascending"), ("step", "ascending")])
        keys = list(zip(table["trial_id"].to_pylist(), table["epoch"].to_pylist(), strict=True))
        starts = [i for i in range(len(keys)) if i == 0 or keys[i] != keys[i - 1]]
        for start, end in zip(starts, [*starts[1:], len(keys)], strict=True):
            trial_id, epoch = keys[start]
            _write_atomic(table.slice(start, end - start), staging / _step_name(trial_id, epoch))
        path.replace(legacy)
    if legacy.is_file():
        staging.replace(path)
    (path / legacy.name).unlink(missing_ok=True)


def remove_steps_except(folder: Path, trial_ids: set[str]) -> None:
    """Delete the step files of every trial not in `trial_ids` (and the folder, once empty)."""
    steps = folder / STEPS_FILE
    if not steps.is_dir():
        return
    for path in steps.iterdir():
        match = _STEP_NAME.fullmatch(path.name)
        if match and match["trial"] not in trial_ids:
            path.unlink()
    if not any(steps.iterdir()):
        steps.rmdir()

