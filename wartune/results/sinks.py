"""Where per-epoch records go: one small interface, several receivers.

The tune layer calls every sink with plain dicts (trial metadata and one result), so a
sink knows nothing of Ray. `ParquetSink` keeps the Parquet tables of a search up to date
after every epoch; MLflow and the progress display are sinks too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from wartune.results.pareto import mark_pareto
from wartune.results.store import (
    EPOCH_SCHEMA,
    EPOCHS_FILE,
    TRIAL_SCHEMA,
    TRIALS_FILE,
    TUNED_COLUMNS,
    read_rows,
    remove_steps_except,
    upgrade_steps_file,
    write_steps,
    write_table,
)
from wartune.results.trials import (
    TEST_RESULT,
    TrialMeta,
    TrialSummary,
    final_attack_of,
    stored_test_reading,
    trial_status,
)
from wartune.version import __version__


class Sink(Protocol):
    """Receives a search's results as they arrive on the driver."""

    def on_epoch(self, meta: TrialMeta, result: dict[str, Any]) -> None: ...

    def on_trial_end(self, meta: TrialMeta, status: str, error: str | None) -> None: ...

    def close(self) -> None: ...


def _nan_to_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


# trials.parquet's columns about the trial's (last) run, and the result keys they come from.
TIMING_COLUMNS = {
    "started_at": "started_at",
    "ended_at": "reported_at",
    "resumed_from_epoch": "resumed_from_epoch",
    "resume_note": "resume_note",
    "node": "node_id",
}


class ParquetSink:
    """Maintains epochs.parquet, steps.parquet and trials.parquet in the search folder.

    Rows are keyed by (trial, epoch), so a resumed search that re-reports an epoch
    replaces the row instead of duplicating it; existing tables are read back on start.
    A trial's last epoch carries its one reading of the test split (`TEST_RESULT`): it
    becomes the trial row's `test_*`, and the epoch row keeps the validation figures.
    Step rows (hundreds per epoch) are not kept: each epoch's trace goes straight to its
    own file in the steps.parquet folder, so memory and write cost do not grow with epochs.
    Each write marks the trade-off front anew (`pareto`, by `objectives`: a trial finishing
    can push another off it), as it depends on every trial, never on one alone.
    """

    def __init__(self, folder: Path, objectives: Sequence[str] | None = None) -> None:
        self.folder = folder
        self.objectives = objectives
        upgrade_steps_file(folder)
        self.epochs = {(r["trial_id"], r["epoch"]): r for r in read_rows(folder / EPOCHS_FILE, EPOCH_SCHEMA)}
        self.trials = {r["trial_id"]: r for r in read_rows(folder / TRIALS_FILE, TRIAL_SCHEMA)}
        self.errors: dict[str, str] = {}
        self.timing: dict[str, dict[str, Any]] = {t: {k: r[k] for k in TIMING_COLUMNS} for t, r in self.trials.items()}
        self.test_results = {t: f for t, r in self.trials.items() if (f := stored_test_reading(r)) is not None}

    def on_epoch(self, meta: TrialMeta, result: dict[str, Any]) -> None:
        trial_id = meta.trial_id
        if result.get("error"):
            self.errors[trial_id] = str(result["error"])
            return
        self.timing[trial_id] = {column: result.get(key) for column, key in TIMING_COLUMNS.items()}
        if result.get(TEST_RESULT):
            self.test_results[trial_id] = result[TEST_RESULT]
        epoch = int(result["epoch"])
        row = meta.key_columns()
        row["lambda_setting"] = meta.lambda_setting
        row["stack"] = meta.stack
        row.update({name: _nan_to_none(result[name]) for name in EPOCH_SCHEMA.names if name not in row})
        self.epochs[(trial_id, epoch)] = row
        trace = result.get("steps") or {}
        steps = [
            {"search": meta.search, "trial_id": trial_id, "epoch": epoch, "step": i,
             "l_nat": l_nat, "l_rob": l_rob, "lambda_t": lam}
            for i, (l_nat, l_rob, lam) in enumerate(
                zip(trace.get("l_nat", []), trace.get("l_rob", []), trace.get("lambda_t", []), strict=True)
            )
        ]  # fmt: skip
        self._write_steps(steps, trial_id, epoch)
        self.trials[trial_id] = self._trial_row(meta, "running", None)
        self._write()

    def on_trial_end(self, meta: TrialMeta, status: str, error: str | None) -> None:
        error = error or self.errors.get(meta.trial_id)
        done = sum(1 for t, _ in self.epochs if t == meta.trial_id)
        self.trials[meta.trial_id] = self._trial_row(meta, trial_status(status, error, done, meta.epochs_planned), error)
        self._write()

    def close(self) -> None:
        self._write()

    def forget_except(self, trial_ids: set[str]) -> None:
        """Drop rows of trials the experiment does not know (yet) — work lost in a crash.

        A driver killed between a new trial's first report and Ray's next experiment
        snapshot leaves rows of a trial that `Tuner.restore` will not resume; Ray starts
        a replacement instead, so the orphan's rows must go to keep one row per trial.
        """
        self.epochs = {k: r for k, r in self.epochs.items() if k[0] in trial_ids}
        self.trials = {k: r for k, r in self.trials.items() if k in trial_ids}
        self.test_results = {k: f for k, f in self.test_results.items() if k in trial_ids}
        remove_steps_except(self.folder, trial_ids)

    def _trial_row(self, meta: TrialMeta, status: str, error: str | None) -> dict[str, Any]:
        """The trial's key, its summary (result, per-epoch figures, ζ, λ, cost) and its state."""
        rows = [r for (t, _), r in self.epochs.items() if t == meta.trial_id]
        summary = TrialSummary.of(rows, meta, self.test_results.get(meta.trial_id))
        timing = self.timing.get(meta.trial_id) or dict.fromkeys(TIMING_COLUMNS)
        return {
            **meta.key_columns(),
            **timing,
            **summary.as_dict(),
            "lambda_setting": meta.lambda_setting,
            "zeta_from": meta.zeta_from,
            "zeta_used": meta.zeta_used,
            "device": meta.device,
            "precision": meta.precision or self.trials.get(meta.trial_id, {}).get("precision"),
            "graphs": meta.graphs or self.trials.get(meta.trial_id, {}).get("graphs"),
            "cpus": meta.cpus,
            "gpus": meta.gpus,
            "restarts": meta.restarts,
            "status": status,
            "error": error,
            "checkpoint": meta.checkpoint,
            "stack": meta.stack,
            "wartune_version": __version__,  # this driver ran it: a search resumed after an upgrade shows which
            **{name: getattr(meta, name) for name in TUNED_COLUMNS},
            **final_attack_of(self.trials.get(meta.trial_id)),  # written after the trials, kept by every rewrite
        }

    def _write_steps(self, rows: list[dict[str, Any]], trial_id: str, epoch: int) -> None:
        """One epoch's trace to its own file: the cost stays the same at every epoch."""
        write_steps(rows, self.folder, trial_id, epoch)

    def _write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        epochs = sorted(self.epochs.values(), key=lambda r: (r["trial_id"], r["epoch"]))
        write_table(epochs, EPOCH_SCHEMA, self.folder / EPOCHS_FILE)
        trials = mark_pareto(sorted(self.trials.values(), key=lambda r: r["trial_id"]), self.objectives)
        write_table(trials, TRIAL_SCHEMA, self.folder / TRIALS_FILE)
