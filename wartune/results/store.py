"""Parquet tables of a search, with their pyarrow schemas declared once.

`epochs.parquet` (one row per trial × epoch), `trials.parquet` (one row per trial) and
`steps.parquet` (one row per training step: the λ_t trace). These files are the source
of truth for results; MLflow and reports are derived from them. Every write is atomic
(temporary file, then rename), so a killed search never leaves a torn table.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

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
        ("nat_acc", pa.float64()),
        ("rob_acc", pa.float64()),
        ("stability", pa.float64()),
        ("lipschitz", pa.float64()),
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
        ("eval_examples", pa.int64()),
    ]
)

TRIAL_SCHEMA = pa.schema(
    _TRIAL_KEY
    + [
        ("lambda_setting", pa.float64()),
        ("lambda_final", pa.float64()),  # λ at the end of training (WAR: its last λ_t)
        ("zeta", pa.float64()),  # l_nat / l_rob epoch means, last epoch
        ("zeta_step_std", pa.float64()),
        ("zeta_from", pa.string()),
        ("zeta_used", pa.float64()),  # WAR's target ζ; null for fixed λ
        ("best_epoch", pa.int64()),
        ("epochs", pa.int64()),
        ("nat_acc", pa.float64()),
        ("rob_acc", pa.float64()),
        ("stability", pa.float64()),
        ("lipschitz", pa.float64()),
        ("final_nat_acc", pa.float64()),
        ("final_rob_acc", pa.float64()),
        ("final_stability", pa.float64()),
        ("wall_seconds", pa.float64()),
        ("device_seconds", pa.float64()),
        ("device", pa.string()),
        ("cpus", pa.float64()),
        ("gpus", pa.float64()),
        ("started_at", pa.float64()),  # unix seconds, when the trial (last) started
        ("ended_at", pa.float64()),  # unix seconds of its last report
        ("restarts", pa.int64()),  # retries after a crash (Ray's num_failures)
        ("resumed_from_epoch", pa.int64()),  # epoch of the checkpoint its last run resumed from
        ("node", pa.string()),  # Ray node id that ran it (last)
        ("status", pa.string()),
        ("error", pa.string()),
        ("checkpoint", pa.string()),
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
    ]
)

COMPARE_SCHEMA = pa.schema(
    [
        ("compare", pa.string()),
        ("strategy", pa.string()),
        ("model", pa.string()),
        ("width", pa.float64()),
        ("lambda_final", pa.float64()),
        ("nat_acc", pa.float64()),
        ("rob_acc", pa.float64()),
        ("stability", pa.float64()),
        ("trials", pa.int64()),
        ("device_seconds", pa.float64()),  # the strategy's own trials
        ("calibration_seconds", pa.float64()),  # thin-net tuning it relied on
        ("total_seconds", pa.float64()),
        ("cost_vs_grid", pa.float64()),
        ("best_trial", pa.string()),
    ]
)

TRIAL_KEY_COLUMNS = tuple(name for name, _ in _TRIAL_KEY)

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
    table = to_table(rows, schema)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)


def read_rows(path: Path, schema: pa.Schema) -> list[dict[str, Any]]:
    """Rows of a table written by `write_table`; empty when the file does not exist."""
    if not path.exists():
        return []
    table = pq.read_table(path)
    if not table.schema.equals(schema, check_metadata=False):
        raise ValueError(f"{path} does not have the expected schema")
    return table.to_pylist()
