"""Searches beyond λ (`search:` in a space, `tune/dimensions.py`): lr × weight decay × λ with
Optuna and ASHA end to end (the chosen values in trials.parquet, MLflow and the study), the
values reaching the engine config, the evaluation kept at the threat model's ε, and the
blocks a strategy cannot run refused in one line."""

from __future__ import annotations

import optuna
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import write_space
from tests.test_cli import _run
from wartune.tune.dimensions import TUNED, with_tuned
from wartune.tune.params import TrialParams, trial_params
from wartune.tune.spaces import SearchSpace
from wartune.tune.strategies import count_trials, param_space, trial_scheduler
from wartune.tune.study import OPTUNA_FILE


def test_a_trials_tuned_values_reach_its_engine_config_and_the_evaluation_keeps_the_threat_models_eps():
    space = SearchSpace.model_validate({"strategy": "grid", "model": "cnn-4", "lambda": [1, 6], "dataset": "digits",
                                        "search": {"eps": [0.1, 0.3], "attack_steps": [2, 5], "lr": [0.05]}})  # fmt: skip
    params = param_space(space)
    assert count_trials(space, params) == 2 * 2 * 2 * 1  # λ × eps × attack_steps × lr
    chosen = {**params, "lam": 6.0, TUNED: {"eps": 0.3, "attack_steps": 5, "lr": 0.05}}
    config = TrialParams.parse(chosen).config
    assert (config.eps, config.train_steps, config.lr) == (0.3, 5, 0.05)  # what the trial trains with
    assert (config.eval_pgd().eps, config.eval_pgd().step_size) == (0.2, 0.05)  # digits' threat model, whatever it trained at
    assert with_tuned({"attack": {"step": 0.01}}, {"attack_steps": 3}) == {"attack": {"step": 0.01, "steps": 3}}
    meta = TrialParams.parse(chosen).meta("t")
    assert (meta.lr, meta.attack_steps, meta.eps) == (0.05, 5, 0.3)  # its columns
    timed = SearchSpace.model_validate({"strategy": "optuna", "model": "cnn-4", "lambda": {"low": 1, "high": 6}, "epochs": 3,
                                        "scheduler": "asha", "search": {"epochs": {"low": 2, "high": 8}}})  # fmt: skip
    assert trial_scheduler(timed, param_space(timed))._max_t == 8  # ASHA's last rung: the longest trial's
    assert TrialParams.parse({**param_space(timed), "lam": 2.0, TUNED: {"epochs": 5}}).config.epochs == 5
    plain = trial_params(SearchSpace.model_validate({"model": "cnn-4", "lambda": [1]}), "cnn-4", 1.0)
    assert TUNED not in plain  # a search over λ alone: its trials' configs as before


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"search": {"momentum": [0.9]}}, "search: cannot tune 'momentum'; tunable: lr, weight_decay, eps"),
        ({"search": {"lr": {"low": 0.01, "high": 0.1}}}, "search.lr: a range is sampled by strategy optuna or pbt; strategy 'grid' needs a list"),
        ({"search": {"attack_steps": [2.5]}}, "search.attack_steps: takes whole numbers"),
        ({"search": {"lr": [0]}}, "search.lr: give positive values"),
        ({"search": {"lr": [0.1]}, "stack": 2}, "the members of a stack differ in λ and seed alone"),
        ({"search": {"batch_size": [64, 128]}, "strategy": "pbt", "trials": 2, "lambda": {"low": 1, "high": 6}},
         "search: PBT cannot move batch_size in the middle of a run"),
        ({"search": {"lr": [0.1]}, "strategy": "compare", "thin_model": "cnn-4"}, "strategy 'compare' tunes λ alone"),
    ],
)
def test_a_search_block_the_strategy_cannot_run_is_refused_in_one_line(tmp_path, capsys, changes, message):
    space = write_space(tmp_path, **changes)
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_optuna_and_asha_search_lr_weight_decay_and_lambda_and_every_record_names_the_chosen_values(tmp_path, capsys):
    space = write_space(tmp_path, strategy="optuna", scheduler="asha", model="mlp-64", trials=3, max_concurrent=1, epochs=2,
                        **{"lambda": {"low": 1, "high": 12, "log": True}},
                        search={"lr": {"low": 0.02, "high": 0.3, "log": True}, "weight_decay": [0.0001, 0.0005]})  # fmt: skip
    out = tmp_path / "runs"
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], capsys)
    assert code == 0, err
    trials = {t["trial_id"]: t for t in pq.read_table(out / "tiny" / "trials.parquet").to_pylist()}
    assert len(trials) == 3 and all(0.02 <= t["lr"] <= 0.3 and t["weight_decay"] in (0.0001, 0.0005) for t in trials.values())
    assert len({t["lr"] for t in trials.values()}) == 3  # sampled per trial
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "params.trial_id != ''")
    logged = {r.data.params["trial_id"]: (float(r.data.params["lr"]), float(r.data.params["weight_decay"])) for r in runs}
    assert logged == {i: (t["lr"], t["weight_decay"]) for i, t in trials.items()}
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'tiny' / OPTUNA_FILE}")
    told = sorted((round(tr.params[f"{TUNED}/lr"], 12), tr.params[f"{TUNED}/weight_decay"]) for tr in study.trials)
    assert told == sorted((round(t["lr"], 12), t["weight_decay"]) for t in trials.values())  # the study asked them
