"""MLflow tracking of a search: a live sink that rides out outages, and a replay from Parquet.

Layout: one experiment per search name, one parent run per invocation (the resolved search
space as params), one nested run per trial (its setting as params, per-epoch metrics with
step = epoch, best/final metrics and its status at the end); `mlflow_tracker.py` makes the
calls. The Parquet tables stay the source of truth and MLflow is a view of them: when the
tracking server goes away the search goes on, the rows wait in Parquet, and the sink logs
them when the server is back, at the latest when the search ends.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from wartune.errors import WartuneError, warn
from wartune.results.mlflow_tracker import (
    EPOCH_METRICS,
    FAST_FAIL_ENV,
    TRACKING_ERRORS,
    TRIAL_PARAMS,
    MlflowTracker,
    artifact_location,
    default_tracking_uri,
    flatten,
    git_commit,
    newest_trial_run,
    short_reason,
    summary_metrics,
    unreachable,
)
from wartune.results.store import SPACE_FILE, TRIALS_FILE
from wartune.results.trials import TrialMeta

__all__ = [
    "EPOCH_METRICS",
    "FAST_FAIL_ENV",
    "TRACKING_ERRORS",
    "TRIAL_PARAMS",
    "MlflowSink",
    "MlflowSinkFactory",
    "artifact_location",
    "default_tracking_uri",
    "flatten",
    "git_commit",
    "log_artifacts",
    "log_final_attack",
    "log_search",
    "short_reason",
    "summary_metrics",
]

RETRY_DELAYS_S = (0.5, 1.0)  # a call that fails is tried again after these pauses
MAX_BACKOFF_S = 60.0  # while down, the server is probed at most this often (1, 2, 4, ... s)


class MlflowSink:
    """The live sink: logs each result as it arrives, and survives the server going away.

    A failing call is retried twice (0.5 s, 1 s). If it still fails the sink says so in one
    line and stops calling MLflow; the rows it could not send are in the search's Parquet
    tables (written before this sink is called). It probes the server again with a growing
    back-off (1 s, 2 s, 4 s ... at most 60 s between probes) and, once it answers, logs
    everything it missed from Parquet and says so in one line. When the search ends it
    tries once more, so a search that finished while MLflow was reachable has no gap.
    Without a `folder` (a sink driven by hand) there is nothing to catch up from.
    """

    def __init__(self, tracking_uri: str, experiment: str, search_params: dict[str, Any], tags: dict[str, str],
                 folder: Path | None = None, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.tracker = MlflowTracker(tracking_uri, experiment, search_params, dict(tags))
        self.folder = folder
        self.clock = clock
        self.down_since: float | None = None
        self.next_probe = 0.0
        self.backoff = 1.0
        self.outages = 0

    @property
    def disabled(self) -> bool:
        """True while the server is unreachable (the sink is waiting to catch up)."""
        return self.down_since is not None

    @property
    def parent_run_id(self) -> str | None:
        return self.tracker.parent_id

    def on_epoch(self, meta: TrialMeta, result: dict[str, Any]) -> None:
        self._call(self.tracker.epoch, meta, result)

    def on_trial_end(self, meta: TrialMeta, status: str, error: str | None) -> None:
        self._call(self.tracker.trial_end, meta, status, error)

    def close(self) -> None:
        if self.disabled:
            self.next_probe = 0.0  # the search is over: one last try to catch up
        if self.folder is not None:  # the Parquet sink closed first: trials.parquet's front is final
            self._call(self.tracker.mark_front, self.folder)
        self._call(self.tracker.close)

    def _call(self, call: Callable[..., None], *args: Any) -> None:
        if self.disabled:
            if self.clock() < self.next_probe or not self._catch_up():
                return
        try:
            self._with_retries(call, *args)
        except TRACKING_ERRORS as err:
            self._went_down(err)

    def _with_retries(self, call: Callable[..., None], *args: Any) -> None:
        for delay in (*RETRY_DELAYS_S, None):
            try:
                call(*args)
                return
            except TRACKING_ERRORS:
                if delay is None:
                    raise
                time.sleep(delay)

    def _went_down(self, err: BaseException) -> None:
        self.down_since, self.backoff = self.clock(), 1.0
        self.next_probe = self.down_since + self.backoff
        self.outages += 1
        uri = self.tracker.tracking_uri
        what = f"cannot reach {uri}" if unreachable(err) else f"error from {uri}"
        later = "; the rows wait in Parquet and are sent when it is back" if self.folder else ""
        warn(f"MLflow logging paused: {what} ({short_reason(err)}){later}")

    def _catch_up(self) -> bool:
        """Probe the server; when it answers, log what it missed. True once it is back."""
        try:
            if self.folder is None:
                self.tracker.client.search_experiments(max_results=1)
            else:
                self.tracker.replay(self.folder)
        except TRACKING_ERRORS:
            self.backoff = min(2 * self.backoff, MAX_BACKOFF_S)
            self.next_probe = self.clock() + self.backoff
            return False
        gap = self.clock() - (self.down_since or self.clock())
        self.down_since = None
        caught_up = ", caught up from Parquet" if self.folder else ""
        warn(f"MLflow logging resumed after {gap:.0f} s{caught_up}")
        return True


@dataclass(frozen=True)
class MlflowSinkFactory:
    """Plain settings that build an `MlflowSink`: Ray pickles the callback holding this.

    Called with the search folder, whose Parquet tables the sink catches up from.
    """

    tracking_uri: str
    experiment: str
    search_params: dict[str, Any]
    tags: dict[str, str]

    def __call__(self, folder: Path | None = None) -> MlflowSink:
        return MlflowSink(self.tracking_uri, self.experiment, self.search_params, self.tags, folder)


def log_search(folder: Path, tracking_uri: str, experiment: str | None = None) -> str:
    """Log a finished search from its Parquet files alone; returns the parent run id.

    The same layout as the live sink, fed with the stored rows, so the metric histories
    equal epochs.parquet. A search already in that store (logged live, or by an earlier
    call) is refused rather than logged twice. Failures raise `WartuneError` (an explicit
    request should fail loudly, unlike the live sink).
    """
    folder = Path(folder)
    if not (folder / TRIALS_FILE).is_file():
        raise WartuneError(f"{str(folder)!r}: no {TRIALS_FILE} there (not a wartune search folder)")
    space = yaml.safe_load((folder / SPACE_FILE).read_text()) if (folder / SPACE_FILE).is_file() else {}
    space = space or {}
    # A plain read, not store.read_rows: a search written before a schema change still logs.
    trials = pq.read_table(folder / TRIALS_FILE).to_pylist()
    first = trials[0] if trials else {}
    name = experiment or space.get("name") or first.get("search") or folder.name
    tags = {k: str(space.get(k) or first.get(k)) for k in ("strategy", "dataset", "objective") if space.get(k) or first.get(k)}
    try:
        logged = logged_parent(tracking_uri, name)
    except TRACKING_ERRORS as err:
        raise WartuneError(f"cannot log {str(folder)!r} to MLflow at {tracking_uri}: {short_reason(err)}") from err
    if logged is not None:
        run_id, source = logged
        raise WartuneError(
            f"search {name!r} is in MLflow at {tracking_uri} already (parent run {run_id}, logged by "
            f"{'this report' if source == 'parquet' else 'the search itself'}): nothing logged twice; "
            "delete that run to log the folder again"
        )
    tracker = MlflowTracker(tracking_uri, name, space, tags, source="parquet")
    try:
        tracker.replay(folder)
        tracker.mark_front(folder)
        tracker.close()
    except TRACKING_ERRORS as err:
        raise WartuneError(f"cannot log {str(folder)!r} to MLflow at {tracking_uri}: {short_reason(err)}") from err
    assert tracker.parent_id is not None
    return tracker.parent_id


def logged_parent(tracking_uri: str, experiment: str) -> tuple[str, str] | None:
    """The parent run an earlier log of search `experiment` left there (its id and source:
    `parquet` for `report --to-mlflow`, else the live search), or None."""
    for key, value in FAST_FAIL_ENV.items():
        os.environ.setdefault(key, value)
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.search = '{experiment}'", max_results=1000)
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    if not parents:
        return None
    return parents[0].info.run_id, parents[0].data.tags.get("wartune.source", "")


def log_final_attack(tracking_uri: str, experiment: str, figures: dict[str, dict[str, float]]) -> None:
    """Add the search end's AutoAttack figures (trial id -> metrics) to each trial's newest
    nested run, beside its PGD-20 `test_rob_acc`. Warn, never raise: they are in trials.parquet."""
    for key, value in FAST_FAIL_ENV.items():
        os.environ.setdefault(key, value)
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        now = int(time.time() * 1000)
        for trial_id, metrics in figures.items():
            if (run_id := newest_trial_run(client, experiment, trial_id)) is not None:
                client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()], synchronous=True)
    except TRACKING_ERRORS as err:
        warn(f"MLflow AutoAttack figures skipped ({short_reason(err)}); they are in trials.parquet")


def log_artifacts(tracking_uri: str, experiment: str, files: list[Path]) -> None:
    """Attach the search's summary and plots to its newest parent run (warn, never raise)."""
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return
        runs = client.search_runs(
            [exp.experiment_id], filter_string="tags.`wartune.source` = 'live'", order_by=["attributes.start_time DESC"],
            max_results=20,
        )  # fmt: skip
        parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
        if not parents:
            return
        for path in files:
            client.log_artifact(parents[0].info.run_id, str(path), artifact_path="plots" if path.suffix == ".png" else None)
    except TRACKING_ERRORS as err:
        if not unreachable(err):  # an unreachable store was already reported by the sink
            warn(f"MLflow artifacts skipped ({short_reason(err)})")
