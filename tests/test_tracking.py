"""MLflow logging against real stores: sqlite files and a real `mlflow server` process.

Every check compares MLflow with the Parquet tables of one real search (the session's
`war_search`): one parent run, one nested run per trial, per-epoch histories equal to
epochs.parquet, whether the runs come from the live sink or from `log_search`.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from tests.conftest import free_port, wartune_lines
from tests.test_cli import _run
from wartune.errors import WartuneError

# trials.stored_test_reading through its module, as the other rules
from wartune.results import trials as trial_rules
from wartune.results.tracking import (
    EPOCH_METRICS,
    MlflowSinkFactory,
    default_tracking_uri,
    flatten,
    log_search,
)
from wartune.results.trials import TEST_RESULT, TrialMeta


def _tables(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return pq.read_table(folder / "trials.parquet").to_pylist(), pq.read_table(folder / "epochs.parquet").to_pylist()


def _structure(uri: str, experiment: str) -> tuple[Run, dict[str, Run]]:
    """The experiment's single parent run and its nested runs by trial id; nothing else is there."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID) == parent.info.run_id]
    assert len(children) == len(runs) - 1
    by_trial = {r.data.params["trial_id"]: r for r in children}
    assert len(by_trial) == len(children), "one nested run per trial"
    return parent, by_trial


def _check_trials(uri: str, runs: dict[str, Run], trials: list[dict[str, Any]], epochs: list[dict[str, Any]]) -> None:
    """Each trial's nested run: its setting as params, histories equal to epochs.parquet, best metrics, status."""
    client = MlflowClient(uri)
    for trial in trials:
        run = runs[trial["trial_id"]]
        params = run.data.params
        assert params["model"] == trial["model"] and params["strategy"] == trial["strategy"]
        assert float(params["width"]) == trial["width"] and float(params["eps"]) == trial["eps"]
        assert params["objective"] == trial["objective"] and int(params["seed"]) == trial["seed"]
        if trial["lambda_setting"] is None:
            assert float(params["zeta_used"]) == trial["zeta_used"] and "lambda_setting" not in params
        else:
            assert float(params["lambda_setting"]) == trial["lambda_setting"] and "zeta_used" not in params
        rows = sorted((r for r in epochs if r["trial_id"] == trial["trial_id"]), key=lambda r: r["epoch"])
        assert rows
        for key in EPOCH_METRICS:
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
            assert history == [(r["epoch"], r[key]) for r in rows if r[key] is not None], key
        metrics = run.data.metrics
        # the trial's metrics are trials.parquet's numeric columns, under their names; the best epoch's
        # validation figures as best_val_* (val_* are the epochs' histories above), equal to those at that epoch
        assert {k: metrics[mlflow_name(k)] for k in TRIAL_METRICS} == {k: trial[k] for k in TRIAL_METRICS}
        best = next(r for r in rows if r["epoch"] == trial["best_epoch"])
        assert [best[k] for k in ("val_nat_acc", "val_rob_acc", "val_stability")] == [
            metrics[k] for k in ("best_val_nat_acc", "best_val_rob_acc", "best_val_stability")
        ]
        assert metrics["test_examples"] == trial["test_examples"] == 360  # the result: the whole test split, read once
        assert metrics["best_val_examples"] == trial["val_examples"] == 90  # the choice: the best epoch's validation figures
        assert metrics["final_zeta"] == trial["zeta"]
        assert not {"rob_acc", "nat_acc", "best_rob_acc", "eval_examples", "best_epoch_rob_acc"} & set(metrics)  # schema 3's
        assert params["precision"] == trial["precision"]
        assert metrics.get("lambda_settled_epoch") == trial["lambda_settled_epoch"]
        assert run.data.tags["status"] == trial["status"] == "finished" and "error" not in run.data.tags
        assert run.info.status == "FINISHED"


# trials.parquet's numeric columns of a finished trial that MLflow shows as its run's metrics
TRIAL_METRICS = (
    "best_epoch", "epochs", "val_nat_acc", "val_rob_acc", "val_stability", "val_examples",
    *(f"{split}_{figure}_{end}" for split in ("val", "test") for figure in ("nat_acc", "rob_acc", "stability") for end in ("lo", "hi")),
    "final_val_nat_acc", "final_val_rob_acc", "final_val_stability",
    "test_nat_acc", "test_rob_acc", "test_stability", "test_lipschitz", "test_examples",
    "lambda_final", "war_skipped_steps", "wall_seconds", "device_seconds",
)  # fmt: skip


def mlflow_name(column: str) -> str:
    """A trials.parquet column's name as a run's metric: the best epoch's validation figures are `best_val_*`."""
    return f"best_{column}" if column.startswith("val_") else column


def _check_parent(parent: Run, strategy: str = "grid") -> None:
    assert parent.info.status == "FINISHED"
    assert parent.data.params["attack.eps"] == "0.2" and parent.data.params["model"] == '["cnn-4", "cnn-8"]'
    assert parent.data.tags["strategy"] == strategy
    assert parent.data.tags["dataset"] == "digits" and parent.data.tags["objective"] == "trades"


def _head() -> str | None:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else None


def test_flatten_and_default_uri():
    assert flatten({"attack": {"eps": 0.2, "step": None}, "model": ["a", "b"], "seed": 0}) == {
        "attack.eps": "0.2", "model": '["a", "b"]', "seed": "0",
    }  # fmt: skip
    uri = default_tracking_uri(Path("runs"))
    assert uri == f"sqlite:///{Path('runs').resolve()}/mlflow.db" and uri.startswith("sqlite:////")


def test_log_search_mirrors_the_parquet_tables(war_search, tmp_path):
    folder = war_search["folder"]
    trials, epochs = _tables(folder)
    uri = default_tracking_uri(tmp_path)
    parent_id = log_search(folder, uri)
    parent, runs = _structure(uri, "tiny")
    assert parent.info.run_id == parent_id and len(runs) == len(trials) == 4
    _check_parent(parent)
    assert parent.data.tags["wartune.source"] == "parquet"
    _check_trials(uri, runs, trials, epochs)


def test_live_sink_in_a_real_search_logged_every_epoch(war_search):
    """The factory went through Ray's pickling into the driver callback and logged live."""
    trials, epochs = _tables(war_search["folder"])
    parent, runs = _structure(war_search["live_uri"], "tiny")
    assert len(runs) == len(trials)
    _check_parent(parent)
    assert parent.data.tags["wartune.source"] == "live"
    _check_trials(war_search["live_uri"], runs, trials, epochs)


def test_sink_driven_directly_gives_the_same_structure(war_search, tmp_path):
    trials, epochs = _tables(war_search["folder"])
    uri = default_tracking_uri(tmp_path)
    space = {"model": ["cnn-4", "cnn-8"], "attack": {"eps": 0.2, "steps": 3}, "seed": 0}
    factory = MlflowSinkFactory(uri, "direct", space, {"strategy": "grid", "dataset": "digits", "objective": "trades"})
    sink = pickle.loads(pickle.dumps(factory))()
    client = MlflowClient(uri)
    artifacts = (tmp_path / "artifacts").as_uri()  # not ./mlruns in the working directory
    client.delete_experiment(client.create_experiment("direct", artifact_location=artifacts))  # restored, not an error
    metas = {t["trial_id"]: TrialMeta.from_row(t) for t in trials}
    # the last epoch's report carries the trial's test reading, as the trainable sends it
    last = {t["trial_id"]: (t["epochs"], {TEST_RESULT: trial_rules.stored_test_reading(t)}) for t in trials}
    # Trials interleave, as they do under Ray: every trial's epoch 1, then every epoch 2.
    for epoch in sorted({r["epoch"] for r in epochs}):
        for row in (r for r in epochs if r["epoch"] == epoch):
            final_epoch, full = last[row["trial_id"]]
            result = {**row, "best_epoch": 1, "device": "cpu", "steps": {"l_nat": [1.0]}, **(full if epoch == final_epoch else {})}
            sink.on_epoch(metas[row["trial_id"]], result)
    for meta in metas.values():
        sink.on_trial_end(meta, "finished", None)
    diverged = replace(metas[trials[0]["trial_id"]], trial_id="x_00098")
    sink.on_epoch(diverged, {"epoch": 1, "val_rob_acc": 0.0, "error": "loss is nan at step 3", "device": "cpu"})
    sink.on_trial_end(diverged, "finished", None)
    interrupted = replace(metas[trials[0]["trial_id"]], trial_id="x_00099")
    sink.on_epoch(interrupted, {**epochs[0], "trial_id": "x_00099"})
    assert client.get_run(sink.parent_run_id).info.status == "RUNNING"
    sink.close()
    assert not sink.disabled

    parent, runs = _structure(uri, "direct")
    assert set(runs) == {*metas, "x_00098", "x_00099"}
    _check_parent(parent)
    if _head():
        assert parent.data.tags["git_commit"] == _head()
    _check_trials(uri, {t: runs[t] for t in metas}, trials, epochs)
    bad = runs["x_00098"]
    assert bad.info.status == "FAILED" and bad.data.tags["status"] == "failed"
    assert bad.data.tags["error"] == "loss is nan at step 3" and not bad.data.metrics
    assert runs["x_00099"].info.status == "KILLED"


def test_unreachable_server_warns_once_and_never_raises(war_search, capsys):
    trials, epochs = _tables(war_search["folder"])
    uri = f"http://127.0.0.1:{free_port()}"
    sink = MlflowSinkFactory(uri, "down", {"seed": 0}, {"strategy": "grid"})()
    meta = TrialMeta.from_row(trials[0])
    start = time.monotonic()
    for row in (r for r in epochs if r["trial_id"] == meta.trial_id):
        sink.on_epoch(meta, row)
    sink.on_trial_end(meta, "finished", None)
    sink.close()
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    warnings = wartune_lines(err, "warning")
    assert len(warnings) == 1, err
    assert warnings[0].startswith(f"wartune: warning: MLflow logging paused: cannot reach {uri} (")
    assert "Traceback" not in err and sink.disabled
    start = time.monotonic()
    with pytest.raises(WartuneError, match=f"cannot log .* to MLflow at {uri}"):
        log_search(war_search["folder"], uri)
    assert time.monotonic() - start < 30


def _start_server(root: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:port with its store in `root`; returns once /health answers."""
    cmd = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--default-artifact-root", str(root / "artifacts"),
        "--workers", "1",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited with {proc.returncode}:\n{(root / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            _end_group(proc)
            pytest.fail(f"mlflow server did not answer in 120 s:\n{(root / 'server.log').read_text()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real tracking server on a free local port; its whole process group ends afterwards."""
    port = free_port()
    proc = _start_server(tmp_path_factory.mktemp("mlflow_server"), port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        _end_group(proc)


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (uvicorn worker, job runner), then SIGKILL to what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def test_log_search_to_a_running_mlflow_server(war_search, mlflow_server):
    folder = war_search["folder"]
    trials, epochs = _tables(folder)
    parent_id = log_search(folder, mlflow_server, experiment="tiny-on-server")
    parent, runs = _structure(mlflow_server, "tiny-on-server")
    assert parent.info.run_id == parent_id and len(runs) == len(trials)
    _check_parent(parent)
    _check_trials(mlflow_server, runs, trials, epochs)


def test_cli_search_logs_to_a_running_mlflow_server(mlflow_server, tmp_path, capsys):
    from tests.conftest import write_space

    space = write_space(tmp_path, **{"lambda": [1, 6]})
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"),
                         "--tracking-uri", mlflow_server, "--name", "cli-on-server"], capsys)  # fmt: skip
    assert code == 0, err
    folder = tmp_path / "runs" / "cli-on-server"
    trials, epochs = _tables(folder)
    parent, runs = _structure(mlflow_server, "cli-on-server")
    assert len(runs) == len(trials) == 2
    _check_trials(mlflow_server, runs, trials, epochs)
    client = MlflowClient(mlflow_server)
    artifacts = [a.path for a in client.list_artifacts(parent.info.run_id)]
    assert "summary.md" in artifacts and "plots" in artifacts
    for run in runs.values():
        assert {"trial_summary.md", "model.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.e2e
def test_cli_search_with_unreachable_tracking_completes_and_warns_once(tmp_path, capsys):
    from tests.conftest import write_space

    space = write_space(tmp_path, **{"lambda": [1, 6]})
    uri = f"http://127.0.0.1:{free_port()}"
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--tracking-uri", uri], capsys)
    assert code == 0, err
    warnings = [line for line in wartune_lines(err, "warning") if "MLflow" in line]  # a tiny net may also be at chance
    assert len(warnings) == 1 and warnings[0].startswith(f"wartune: warning: MLflow logging paused: cannot reach {uri}"), err
    trials, epochs = _tables(tmp_path / "runs" / "tiny")
    assert len(trials) == 2 and len(epochs) == 4 and all(t["status"] == "finished" for t in trials)


def test_cli_report_regenerates_summary_and_logs_to_mlflow(war_search, tmp_path, capsys):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(war_search["folder"], folder, ignore=shutil.ignore_patterns("ray", "plots", "summary.md"))
    uri = default_tracking_uri(tmp_path)
    code, out, err = _run(["report", str(folder), "--to-mlflow", "--tracking-uri", uri], capsys)
    assert code == 0, err
    assert (folder / "summary.md").is_file() and len(list((folder / "plots").glob("*.png"))) >= 4
    parent, runs = _structure(uri, "tiny")
    assert len(runs) == 4 and parent.data.tags["wartune.source"] == "parquet"
    code, _, err = _run(["report", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "not a wartune result folder" in err


# The servers of the outage test, by name: its sink runs on the driver, i.e. in this process.
_OUTAGE_SERVERS: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class OutageSinkFactory:
    """A sink placed before the MLflow sink: stops the server at the `stop_at`-th epoch
    report and starts it again (same store, same port) at the `start_at`-th."""

    name: str
    stop_at: int
    start_at: int

    def __call__(self, folder: Path | None = None) -> Any:
        return _OutageSink(self)


class _OutageSink:
    def __init__(self, factory: OutageSinkFactory) -> None:
        self.factory, self.epochs = factory, 0

    def on_epoch(self, meta: Any, result: dict[str, Any]) -> None:
        self.epochs += 1
        server = _OUTAGE_SERVERS[self.factory.name]
        if self.epochs == self.factory.stop_at:
            _end_group(server["proc"])
        elif self.epochs == self.factory.start_at:
            server["proc"] = _start_server(server["root"], server["port"])

    def on_trial_end(self, meta: Any, status: str, error: str | None) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.mark.e2e
def test_mlflow_server_stopped_and_restarted_mid_search_loses_nothing(tmp_path, capsys):
    """The server goes away after the first epoch report and comes back four reports later:
    one warning each way, and MLflow ends up equal to the Parquet tables."""
    from ray import tune

    from tests.conftest import write_space
    from wartune.tune.spaces import load_space
    from wartune.tune.strategies import run_search

    root, port = tmp_path / "server", free_port()
    root.mkdir()
    _OUTAGE_SERVERS["outage"] = {"root": root, "port": port, "proc": _start_server(root, port)}
    uri = f"http://127.0.0.1:{port}"
    try:
        space = load_space(str(write_space(tmp_path, epochs=3, **{"lambda": [1, 6]})), {"name": "outage"})
        tags = {"strategy": space.strategy, "dataset": space.dataset, "objective": space.objective}
        mlflow = MlflowSinkFactory(uri, "outage", space.model_dump(mode="json", by_alias=True), tags)
        outage = OutageSinkFactory("outage", stop_at=2, start_at=5)
        outcome = run_search(space, tmp_path / "runs", lam=tune.grid_search([1.0, 6.0]), num_cpus=2,
                             extra_sinks=[outage, mlflow])  # fmt: skip
        err = capsys.readouterr().err
        warnings = wartune_lines(err, "warning")
        assert len(warnings) == 2, err
        assert warnings[0].startswith(f"wartune: warning: MLflow logging paused: cannot reach {uri}")
        assert warnings[1].startswith("wartune: warning: MLflow logging resumed after") and "caught up" in warnings[1]
        trials, epochs = _tables(outcome.folder)
        assert len(trials) == 2 and len(epochs) == 6
        parent, runs = _structure(uri, "outage")
        assert len(runs) == 2
        _check_trials(uri, runs, trials, epochs)
    finally:
        _end_group(_OUTAGE_SERVERS.pop("outage")["proc"])


def test_report_to_mlflow_twice_or_after_the_live_search_logs_nothing_twice(war_search, tmp_path, capsys):
    # 0.2.0 logged a second parent run of the same search without a word (issue 28).
    from tests.test_cli import _run

    folder = war_search["folder"]
    uri = default_tracking_uri(tmp_path)
    code, out, err = _run(["report", str(folder), "--to-mlflow", "--tracking-uri", uri], capsys)
    assert code == 0, err
    parent, runs = _structure(uri, "tiny")
    code, _, err = _run(["report", str(folder), "--to-mlflow", "--tracking-uri", uri], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"search 'tiny' is in MLflow at {uri} already (parent run {parent.info.run_id}, logged by this report)" in lines[0]
    assert _structure(uri, "tiny")[0].info.run_id == parent.info.run_id  # still one parent, the same runs
    with pytest.raises(WartuneError, match=r"logged by the search itself"):
        log_search(folder, war_search["live_uri"])  # the search logged itself live there
