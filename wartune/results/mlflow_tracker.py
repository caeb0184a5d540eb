"""The MLflow calls of one invocation of wartune: experiment, parent run, a nested run per trial.

Layout: one experiment per search name, one parent run per invocation (the resolved search
space as params), one nested run per trial (its setting as params, per-epoch metrics with
step = epoch, best/final metrics and its status at the end). The Parquet tables stay the
source of truth and MLflow is a view of them, so a tracking server that cannot be reached
costs the live sink a warning line, never the search. All calls go through
`MlflowClient` with explicit run ids: trials finish in any order, and the fluent
active-run API would mix them up.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_PARENT_RUN_ID
from sqlalchemy.exc import SQLAlchemyError

from wartune import interrupts
from wartune.results.model_files import META_FILE
from wartune.results.store import EPOCHS_FILE, TRIALS_FILE
from wartune.results.trials import (
    TEST_RESULT,
    TrialMeta,
    TrialSummary,
    is_finite,
    stored_test_reading,
    trial_status,
)

# Without these MLflow retries an unreachable server for minutes (7 retries, 120 s timeout).
FAST_FAIL_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
# What goes wrong when the store is unreachable or refuses a call; requests' errors are OSErrors.
TRACKING_ERRORS: tuple[type[Exception], ...] = (MlflowException, OSError, SQLAlchemyError)

EPOCH_METRICS = ("val_nat_acc", "val_rob_acc", "val_stability", "l_nat", "l_rob", "zeta", "lambda_mean", "lambda_last", "val_lipschitz", "lr")
TRIAL_PARAMS = ("trial_id", "strategy", "model", "width", "dataset", "objective", "eps", "seed", "lambda_setting", "zeta_used", "zeta_from",
                "precision", "graphs", "lr", "weight_decay", "attack_steps", "attack_step", "batch_size")  # fmt: skip
FINAL_ATTACK_METRICS = ("aa_rob_acc", "aa_seconds")  # trials.parquet's AutoAttack columns MLflow shows
_RUN_STATUS = {"finished": "FINISHED", "stopped": "FINISHED", "running": "KILLED", "interrupted": "KILLED"}  # error, failed: FAILED
_BATCH = 100  # MLflow's limit of params or tags per log_batch call (metrics: 1000)


def default_tracking_uri(out: Path) -> str:
    """The local default store: `sqlite:////abs/out/mlflow.db` (absolute, so any cwd works)."""
    return f"sqlite:///{(Path(out) / 'mlflow.db').resolve()}"


def artifact_location(tracking_uri: str) -> str | None:
    """Beside a local sqlite store (`runs/mlartifacts`), not in whatever folder the user is in."""
    if not tracking_uri.startswith("sqlite:///"):
        return None  # a server decides where its artifacts go
    return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params: {"attack": {"eps": 0.2}} -> {"attack.eps": "0.2"}; None is left out."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif value is not None:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def git_commit() -> str | None:
    """HEAD of the repository the search runs from, when there is one."""
    try:
        proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


def short_reason(err: BaseException) -> str:
    """The useful end of MLflow's long error text, e.g. 'Connection refused'."""
    text = str(err)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)('[^']*')?", text)
    if errno:  # "Connection refused", "File exists: '/path'"
        reason = errno.group(1).strip()
        return f"{reason} {errno.group(2)}" if reason.endswith(":") and errno.group(2) else reason
    if "timed out" in text.lower():
        return "timed out"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return first if len(first) <= 160 else first[:157] + "..."


def unreachable(err: BaseException) -> bool:
    text = str(err)
    return isinstance(err, OSError) or any(s in text for s in ("Errno", "Max retries", "timed out", "Connection"))


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def newest_trial_run(client: MlflowClient, experiment: str, trial_id: str) -> str | None:
    """The newest nested run a tracker made for the trial (its params hold the trial id): where
    the search end's AutoAttack figures, its front marks and its model go."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"params.trial_id = '{trial_id}'", order_by=["attributes.start_time DESC"],
        max_results=1,
    )  # fmt: skip
    return runs[0].info.run_id if runs else None


def summary_metrics(rows: list[dict[str, Any]], meta: TrialMeta, test: dict[str, Any] | None = None) -> dict[str, float]:
    """A trial's end-of-run metrics, named as trials.parquet's columns (`test_rob_acc` and its
    interval `test_rob_acc_lo` / `_hi`, `final_val_rob_acc`...), the best epoch's validation
    figures as `best_val_*` (`val_*` are each epoch's, logged with their step), and `final_zeta`.

    `best_val_*` chose the best epoch; `test_*` are its weights' one reading of the test split
    once the trial finished; `final_val_*` the last epoch's.
    """
    summary = TrialSummary.of(rows, meta, test).as_dict()
    out = {f"best_{k}" if k.startswith("val_") else k: v for k, v in summary.items() if k not in ("zeta", "zeta_step_std")}
    out["final_zeta"] = summary["zeta"]
    return {k: float(v) for k, v in out.items() if is_finite(v)}


@dataclass
class MlflowTracker:
    """The MLflow calls of one invocation; raises whatever MLflow raises (callers decide)."""

    tracking_uri: str
    experiment: str
    search_params: dict[str, Any]
    tags: dict[str, str]
    source: str = "live"  # "live" (a running search) or "parquet" (log_search)
    parent_id: str | None = None
    runs: dict[str, str] = field(default_factory=dict)  # trial id -> nested run id
    epochs: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    test_results: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial id -> its test reading
    errors: dict[str, str] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    logged: set[tuple[str, int]] = field(default_factory=set)  # (trial id, epoch) in MLflow
    _client: MlflowClient | None = None
    _experiment_id: str | None = None

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            for key, value in FAST_FAIL_ENV.items():
                os.environ.setdefault(key, value)
            # "Creating initial MLflow database tables..." would land between progress lines
            logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def _experiment(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=artifact_location(self.tracking_uri)
                    )
                except MlflowException:
                    exp = self.client.get_experiment_by_name(self.experiment)  # another process made it
                    if exp is None:
                        raise
            if exp is not None:
                if exp.lifecycle_stage == "deleted":  # its name stays taken; logging to it is what was asked
                    self.client.restore_experiment(exp.experiment_id)
                self._experiment_id = exp.experiment_id
        assert self._experiment_id is not None
        return self._experiment_id

    def parent(self) -> str:
        """The invocation's parent run, created on first use."""
        if self.parent_id is None:
            tags = {**self.tags, "search": self.experiment, "wartune.source": self.source}
            commit = git_commit() if self.source == "live" else None
            if commit:
                tags.update({"git_commit": commit, MLFLOW_GIT_COMMIT: commit})
            run = self.client.create_run(self._experiment(), run_name=self.experiment, tags=tags)
            self.parent_id = run.info.run_id
            self._log(self.parent_id, params=flatten(self.search_params))
        return self.parent_id

    def _log(self, run_id: str, metrics: Iterable[Metric] = (), params: dict[str, str] | None = None,
             tags: dict[str, str] | None = None) -> None:  # fmt: skip
        """log_batch in chunks within MLflow's per-call limits."""
        for chunk in _chunks([Param(k, v) for k, v in (params or {}).items()], _BATCH):
            self.client.log_batch(run_id, params=chunk, synchronous=True)
        for chunk in _chunks([RunTag(k, v) for k, v in (tags or {}).items()], _BATCH):
            self.client.log_batch(run_id, tags=chunk, synchronous=True)
        for chunk in _chunks(list(metrics), 1000):
            self.client.log_batch(run_id, metrics=chunk, synchronous=True)

    def trial_run(self, meta: TrialMeta) -> str:
        """The trial's nested run, created (with its setting as params) on first use."""
        trial_id = meta.trial_id
        if trial_id not in self.runs:
            parent = self.parent()
            run = self.client.create_run(self._experiment(), run_name=meta.label, tags={MLFLOW_PARENT_RUN_ID: parent})
            self.runs[trial_id] = run.info.run_id
            params = {k: str(getattr(meta, k)) for k in TRIAL_PARAMS if getattr(meta, k) is not None}
            self._log(run.info.run_id, params=params)
        return self.runs[trial_id]

    def epoch(self, meta: TrialMeta, result: dict[str, Any]) -> None:
        if result.get("error"):  # a diverged trial reports its reason instead of metrics
            self.errors[meta.trial_id] = str(result["error"])
            return
        epoch = int(result["epoch"])
        if result.get(TEST_RESULT):
            self.test_results[meta.trial_id] = result[TEST_RESULT]
        if (meta.trial_id, epoch) in self.logged:  # caught up from Parquet already
            return
        run_id = self.trial_run(meta)
        kept = (*EPOCH_METRICS, "epoch", "wall_seconds", "val_examples", "lambda_min", "lambda_max", "war_skipped_steps")
        self.epochs.setdefault(meta.trial_id, {})[epoch] = {k: result.get(k) for k in kept}
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(result[k]), now, epoch) for k in EPOCH_METRICS if is_finite(result.get(k))]
        self._log(run_id, metrics=metrics)
        self.logged.add((meta.trial_id, epoch))

    def trial_end(self, meta: TrialMeta, status: str, error: str | None) -> None:
        trial_id = meta.trial_id
        if trial_id in self.ended:  # caught up from Parquet already
            return
        run_id = self.trial_run(meta)
        error = error or self.errors.get(trial_id)
        rows = list(self.epochs.get(trial_id, {}).values())
        status = trial_status(status, error, len(rows), meta.epochs_planned)
        now = int(time.time() * 1000)
        test = self.test_results.get(trial_id)
        metrics = [Metric(k, v, now, 0) for k, v in summary_metrics(rows, meta, test).items()] if rows else []
        tags = {"status": status, **({"error": error[:5000]} if error else {})}
        self._log(run_id, metrics=metrics, tags=tags)
        self._trial_artifacts(run_id, meta, rows, status)
        self.client.set_terminated(run_id, status=_RUN_STATUS.get(status, "FAILED"))
        self.ended.add(trial_id)

    def _trial_artifacts(self, run_id: str, meta: TrialMeta, rows: list[dict[str, Any]], status: str) -> None:
        """The trial's own summary (its epochs as a table) and its best model's description."""
        lines = [f"# Trial {meta.trial_id}: {meta.model}, {meta.strategy}, status {status}", "",
                 "| epoch | " + " | ".join(EPOCH_METRICS) + " |", "|---" * (len(EPOCH_METRICS) + 1) + "|"]  # fmt: skip
        for row in sorted(rows, key=lambda r: r["epoch"]):
            cells = ["–" if row.get(k) is None else f"{row[k]:.4g}" for k in EPOCH_METRICS]
            lines.append(f"| {row['epoch']} | " + " | ".join(cells) + " |")
        self.client.log_text(run_id, "\n".join(lines) + "\n", "trial_summary.md")
        model_json = Path(meta.model_dir or "") / META_FILE
        if meta.model_dir and model_json.is_file():
            self.client.log_artifact(run_id, str(model_json))

    def mark_front(self, folder: Path) -> None:
        """Tag each trial's newest run with its mark in trials.parquet: `pareto` (true / false,
        on its model's trade-off front) and `pareto_by` (the objectives it was judged on).

        Called once the table is final for this run (the front moves as trials finish); a trial
        without a run, or a table from before the marks, is left as it is.
        """
        trials = pq.read_table(folder / TRIALS_FILE).to_pylist() if (folder / TRIALS_FILE).is_file() else []
        for trial in trials:
            if trial.get("pareto") is None:
                continue
            run_id = self.runs.get(trial["trial_id"]) or newest_trial_run(self.client, self.experiment, trial["trial_id"])
            if run_id is not None:
                self._log(run_id, tags={"pareto": str(trial["pareto"]).lower(), "pareto_by": trial["pareto_by"]})

    def close(self) -> None:
        """End trials that never ended (an interrupted search) as KILLED, then the parent:
        KILLED too when a stop signal ended the search (`interrupts.py`)."""
        for trial_id, run_id in self.runs.items():
            if trial_id not in self.ended:
                self.client.set_terminated(run_id, status="KILLED")
        if self.parent_id is not None:
            self.client.set_terminated(self.parent_id, status="KILLED" if interrupts.received() is not None else "FINISHED")

    def replay(self, folder: Path) -> None:
        """Log from the search's Parquet tables whatever this tracker has not logged yet.

        `log_search` replays a whole finished search this way, and the live sink catches up
        with it after an outage: an epoch already in MLflow is not logged twice.
        """
        trials = pq.read_table(folder / TRIALS_FILE).to_pylist() if (folder / TRIALS_FILE).is_file() else []
        epochs = pq.read_table(folder / EPOCHS_FILE).to_pylist() if (folder / EPOCHS_FILE).is_file() else []
        self.parent()
        for trial in trials:
            meta = TrialMeta.from_row(trial)
            if meta.checkpoint:
                meta = replace(meta, model_dir=str(folder / meta.checkpoint))
            rows = sorted((r for r in epochs if r["trial_id"] == meta.trial_id), key=lambda r: r["epoch"])
            if (test := stored_test_reading(trial)) is not None:
                self.test_results[meta.trial_id] = test
            for row in rows:
                self.epoch(meta, row)
            if trial["status"] != "running":
                ended = meta.trial_id in self.ended
                self.trial_end(meta, trial["status"], trial.get("error"))
                now = int(time.time() * 1000)
                aa = [Metric(k, float(trial[k]), now, 0) for k in FINAL_ATTACK_METRICS if is_finite(trial.get(k))]
                if aa and not ended:  # the search end's AutoAttack figures, as `log_final_attack` logs them
                    self._log(self.runs[meta.trial_id], metrics=aa)
