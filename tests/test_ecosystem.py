"""A search opens in other tools: Optuna's study in optuna.db, and Ray Tune's own result logs
(ExperimentAnalysis, Tuner.restore), each agreeing with trials.parquet."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pyarrow.parquet as pq
import pytest
from ray import tune

from tests.conftest import write_space
from wartune.results.trials import TEST_RESULT
from wartune.tune.study import OPTUNA_FILE
from wartune.tune.trainable import adversarial_training_trial

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def optuna_search(tmp_path_factory) -> dict:
    """`wartune search` of an Optuna space (3 trials, 2 epochs), as a user runs it: its folder and output."""
    root = tmp_path_factory.mktemp("ecosystem")
    space = write_space(root, strategy="optuna", trials=3, max_concurrent=2, **{"lambda": {"low": 0.5, "high": 12, "log": True}})
    argv = [sys.executable, "-m", "wartune.cli", "search", "--space", str(space), "--out", str(root / "runs"),
            "--num-cpus", "2", "--no-mlflow"]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    folder = root / "runs" / "tiny"
    return {"folder": folder, "out": done.stdout, "err": done.stderr, "trials": pq.read_table(folder / "trials.parquet").to_pylist()}


def test_optuna_study_on_disk_holds_every_trial_with_its_best_robust_accuracy(optuna_search):
    storage = f"sqlite:///{optuna_search['folder'] / OPTUNA_FILE}"
    assert optuna.get_all_study_names(storage) == ["tiny"]
    study = optuna.load_study(study_name="tiny", storage=storage)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    by_lambda = {t["lambda_setting"]: t for t in optuna_search["trials"]}
    assert len(done) == len(by_lambda) == 3
    for t in done:  # each told its best epoch's validation robust accuracy, never a test figure
        assert t.value == by_lambda[t.params["lam"]]["val_rob_acc"]
    assert study.best_value == max(t["val_rob_acc"] for t in optuna_search["trials"])


def _last_results_match_trials(frame, trials: list[dict]) -> None:
    """One row per trial; the last result's accuracies are trials.parquet's final and best
    validation ones, and the test reading it carries is the trial's test figures."""
    rows = {r["trial_id"]: r for r in frame.to_dict("records")}
    assert sorted(rows) == sorted(t["trial_id"] for t in trials)
    for t in trials:
        row = rows[t["trial_id"]]
        assert row["epoch"] == t["epochs"] == 2
        assert row["val_rob_acc"] == t["final_val_rob_acc"] and row["val_nat_acc"] == t["final_val_nat_acc"]
        assert (row["best_rob_acc"], row["best_nat_acc"]) == (t["val_rob_acc"], t["val_nat_acc"])
        test = {k: row[f"{TEST_RESULT}/{k}"] for k in ("test_nat_acc", "test_rob_acc", "test_stability", "test_examples")}
        assert test == {k: t[k] for k in test} and t["test_examples"] == 360
    assert not [c for c in frame.columns if c.startswith("steps")]  # the step trace stays in steps.parquet


def test_ray_experiment_analysis_reads_one_row_per_trial(optuna_search):
    analysis = tune.ExperimentAnalysis(str(optuna_search["folder"] / "ray" / "tune"))
    _last_results_match_trials(analysis.dataframe(), optuna_search["trials"])
    for trial_dir in (optuna_search["folder"] / "ray" / "tune").glob("adversarial_training_trial_*"):
        assert (trial_dir / "progress.csv").is_file() and (trial_dir / "result.json").is_file()
        assert list(trial_dir.glob("events.out.tfevents.*"))  # TensorBoard's too
        lines = (trial_dir / "result.json").read_text().splitlines()
        assert len(lines) == 2 and not any("steps" in json.loads(line) for line in lines)


def test_tuner_restore_returns_the_same_results(optuna_search):
    grid = tune.Tuner.restore(str(optuna_search["folder"] / "ray" / "tune"), adversarial_training_trial).get_results()
    assert len(grid) == 3 and not grid.errors
    _last_results_match_trials(grid.get_dataframe(), optuna_search["trials"])


def test_search_output_shows_no_ray_tables(optuna_search):
    output = optuna_search["out"] + optuna_search["err"]
    for ray_table in ("Trial status", "Current time:", "Trial name", "== Status ==", "Result logdir"):
        assert ray_table not in output
    title = "tiny: each trial's best epoch by validation, its test figures with 95 % intervals (%)"
    assert "epoch 2/2" in optuna_search["err"] and title in " ".join(optuna_search["out"].split())
