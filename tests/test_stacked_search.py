"""`--stack K` in the tune layer: the trials of one model train as stacks, and each member
stays a trial everywhere users look (real Ray, real Parquet, a real MLflow store)."""

import re

import pytest
import torch

from tests.conftest import kill_when, rows_of, write_space
from tests.test_cli import _run
from wartune.tune.stacks import (
    balanced_chunks,
    member_count,
    member_id,
    member_params,
    stacked_params,
    trial_ids,
)


def test_stacks_are_balanced_and_keep_the_order():
    assert balanced_chunks(list(range(8)), 6) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # not 6 and 2
    assert balanced_chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4], [5, 6]]
    assert balanced_chunks([1, 2], 4) == [[1, 2]] and balanced_chunks([1, 2, 3], 1) == [[1], [2], [3]]


def test_a_stacks_config_holds_each_members_lone_config():
    from ray import tune

    params = {"search": "s", "model": tune.grid_search(["cnn-4", "cnn-8"]), "lam": tune.grid_search([1.0, 6.0, 12.0]),
              "seed": tune.grid_search([0, 1]), "base": {"epochs": 2}}  # fmt: skip
    stacked = stacked_params(params, 4)
    assert "lam" not in stacked and "seed" not in stacked and stacked["model"] == params["model"]
    stacks = stacked["members"]["grid_search"]
    assert [len(s) for s in stacks] == [3, 3]  # six λ × seed trials per model, two stacks of three
    members = [m for s in stacks for m in s]
    assert members == [{"lam": lam, "seed": seed} for lam in (1.0, 6.0, 12.0) for seed in (0, 1)]
    config = {**stacked, "model": "cnn-8", "members": stacks[1]}
    assert member_count(config) == 3
    assert member_params(config, 2) == {"search": "s", "model": "cnn-8", "lam": 12.0, "seed": 1, "base": {"epochs": 2}}
    assert trial_ids("x_00001", config) == ["x_00001-0", "x_00001-1", "x_00001-2"] and member_id("x_00001", 2) == "x_00001-2"
    assert trial_ids("x_00001", member_params(config, 0)) == ["x_00001"]  # a lone trial stands for itself
    assert stacked_params(params, 1) is params  # --stack 1: today's path
    one = {**params, "lam": 6.0, "seed": 0}
    assert stacked_params(one, 4) is one  # one trial per model: nothing to stack


def test_count_trials_counts_a_stacks_members():
    from wartune.tune.spaces import SearchSpace
    from wartune.tune.strategies import count_trials, param_space

    space = SearchSpace.model_validate({"strategy": "grid", "model": ["cnn-4", "cnn-8"], "lambda": [1, 3, 6], "seeds": 2, "stack": 4})
    params = param_space(space)
    assert [len(s) for s in params["members"]["grid_search"]] == [3, 3]
    assert count_trials(space, params) == 12  # two models × three λ × two seeds, however stacked


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--stack", "0"], "stack"),
        (["--stack", "-2"], "stack"),
        (["--stack", "3", "--model", "smallcnn", "--dataset", "synthetic-cifar10"], "smallcnn cannot be stacked"),
        (["--stack", "3", "--precision", "fp16"], "fp16 cannot be stacked"),
    ],
)
def test_bad_stack_values_are_refused_in_one_line(tmp_path, capsys, flags, message):
    space = write_space(tmp_path)
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow", *flags], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "pbt", "trials": 4, "lambda": {"low": 1, "high": 12}}, "PBT over a stack holds the whole population in one stack"),
    ],
)
def test_strategies_that_cannot_stack_are_refused(tmp_path, capsys, changes, message):
    space = write_space(tmp_path, **changes)
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow", "--stack", "2"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err


def test_a_stack_the_memory_cannot_hold_is_refused_with_the_largest_that_fits(tmp_path, capsys):
    from wartune.engine.data import dataset_info
    from wartune.engine.stack_memory import free_bytes, largest_stack

    fits = largest_stack("wrn34-10", dataset_info("cifar10"), 128, free_bytes("cpu", 0))
    space = write_space(tmp_path, dataset="synthetic-cifar10", model="wrn34-10", batch_size=128, **{"lambda": list(range(1, fits + 3))})
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow", "--stack", str(fits + 2)], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"a stack of {fits + 2} wrn34-10 trials needs at least" in lines[0]
    advice = re.search(r"use --stack (\d+) or less$", lines[0])  # free memory moves on a busy machine
    assert advice and int(advice.group(1)) < fits + 2 and not (tmp_path / "runs").exists()


def test_member_memory_counts_weights_and_kept_activations():
    # cnn-4 on digits by hand: its weights, and the outputs of its leaf layers for one batch.
    from wartune.engine.data import dataset_info
    from wartune.engine.models import create_model
    from wartune.engine.stack_memory import member_bytes

    info = dataset_info("digits")
    model = create_model("cnn-4", info.num_classes, info.in_channels, info.image_size)
    outputs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.append(o.numel())) for m in model.modules() if not list(m.children())]
    model(torch.zeros(32, info.in_channels, info.image_size, info.image_size))
    for hook in hooks:
        hook.remove()
    weights = sum(p.numel() for p in model.parameters())
    assert member_bytes("cnn-4", info, 32) == 4 * (4 * weights + 2 * sum(outputs))


@pytest.mark.e2e
def test_a_stacked_grid_records_each_member_as_its_own_trial_that_trains_as_its_lone_run(tmp_path, capsys):
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    from wartune.engine.config import TrainConfig
    from wartune.engine.trainer import Trainer

    space = write_space(tmp_path, seeds=2, **{"lambda": [1, 3, 6]})
    store = f"sqlite:///{tmp_path}/mlflow.db"
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--stack", "4",
                         "--tracking-uri", store], capsys)  # fmt: skip
    assert code == 0, err
    folder = tmp_path / "runs" / "tiny"
    trials = rows_of(folder, "trials.parquet")
    assert len(trials) == 6 and {t["status"] for t in trials} == {"finished"}
    stacks: dict[str, list[dict]] = {}
    for t in trials:
        stacks.setdefault(t["stack"], []).append(t)
    assert sorted(len(members) for members in stacks.values()) == [3, 3]
    assert sorted((t["lambda_setting"], t["seed"]) for t in trials) == [(lam, s) for lam in (1, 3, 6) for s in (0, 1)]
    for stack, members in stacks.items():
        assert sorted(t["trial_id"] for t in members) == [f"{stack}-{i}" for i in range(3)]
        assert all((folder / t["checkpoint"] / "model.safetensors").is_file() for t in members)  # each its own best model
    epochs = rows_of(folder)
    assert len(epochs) == 12 and all(e["stack"] is not None for e in epochs)
    for t in trials:  # the members' costs are equal shares of their stack's epoch (plus each one's own closing)
        shares = [e["wall_seconds"] for e in epochs if e["stack"] == t["stack"] and e["epoch"] == 1]
        assert max(shares) == pytest.approx(min(shares), rel=0.05)
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], max_results=100)
    members = [r for r in runs if r.data.tags.get(MLFLOW_PARENT_RUN_ID)]  # a run per member, beside the search's own
    assert sorted(r.info.run_name.split()[0] for r in members) == sorted(t["trial_id"].rsplit("_", 1)[1] for t in trials)

    # A member is its lone trial: the first epoch's losses as the engine alone trains them
    # (float32, grouped convolutions add in another order: to 1e-3).
    member = next(t for t in trials if t["lambda_setting"] == 3 and t["seed"] == 1)
    base = write_space(tmp_path, seeds=2, **{"lambda": [1, 3, 6]})
    import yaml

    settings = yaml.safe_load(base.read_text())
    lone = Trainer(TrainConfig(model="cnn-8", lam=3.0, seed=1, epochs=2, batch_size=settings["batch_size"], attack=settings["attack"],
                               eval=settings["eval"], threads=1))  # fmt: skip
    first = lone.run_epoch()
    row = next(e for e in epochs if e["trial_id"] == member["trial_id"] and e["epoch"] == 1)
    assert row["l_nat"] == pytest.approx(first.l_nat, rel=1e-3) and row["l_rob"] == pytest.approx(first.l_rob, rel=1e-3)
    assert row["lambda_last"] == 3.0


@pytest.mark.e2e
def test_a_diverging_member_fails_alone_and_its_stack_trains_on(tmp_path, capsys):
    space = write_space(tmp_path, **{"lambda": [1, 1e30, 6]})
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow", "--stack", "3"], capsys)
    assert code == 0, err
    trials = {t["lambda_setting"]: t for t in rows_of(tmp_path / "runs" / "tiny", "trials.parquet")}
    assert len({t["stack"] for t in trials.values()}) == 1
    assert trials[1e30]["status"] == "failed" and "diverged" in trials[1e30]["error"]
    assert all(trials[lam]["status"] == "finished" and trials[lam]["epochs"] == 2 for lam in (1.0, 6.0))


@pytest.mark.e2e
def test_a_killed_stacked_search_resumes_every_member_where_it_stopped(tmp_path, capsys):
    # Two stacks of two; killed once every member trained two epochs and none finished.
    space = write_space(tmp_path, epochs=5, model="wrn10-0.5", **{"lambda": [1, 3, 6, 9]})
    out = tmp_path / "runs"
    kill_when(space, out, lambda trials: len(trials) == 4 and all(t["status"] == "running" and t["epochs"] >= 2 for t in trials),
              "--stack", "2")  # fmt: skip
    recorded = rows_of(out / "tiny")
    assert recorded and all(r["stack"] for r in recorded)
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume", "--stack", "2"], capsys)
    assert code == 0, err
    trials = rows_of(out / "tiny", "trials.parquet")
    assert len(trials) == 4 and all(t["status"] == "finished" and t["epochs"] == 5 for t in trials)
    epochs = rows_of(out / "tiny")
    assert all(e in epochs for e in recorded)  # nothing retrained, nothing lost
    assert len(epochs) == 20 and any(t["resumed_from_epoch"] for t in trials)


@pytest.mark.e2e
def test_a_stacked_optuna_search_asks_for_and_is_told_of_every_member(tmp_path, capsys):
    import optuna

    from wartune.tune.study import OPTUNA_FILE

    space = write_space(tmp_path, strategy="optuna", trials=5, **{"lambda": {"low": 0.5, "high": 12, "log": True}})
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow", "--stack", "3"], capsys)
    assert code == 0, err
    folder = tmp_path / "runs" / "tiny"
    trials = rows_of(folder, "trials.parquet")
    assert len(trials) == 5 and {t["status"] for t in trials} == {"finished"}
    sizes = sorted(sum(t["stack"] == s for t in trials) for s in {t["stack"] for t in trials})
    assert sizes == [2, 3]  # the budget of five in balanced stacks of at most three
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{folder / OPTUNA_FILE}")
    told = {round(tr.params["lam"], 12): tr.value for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE}
    # each member told its best epoch's validation robust accuracy
    assert len(study.trials) == 5 and told == {round(t["lambda_setting"], 12): t["val_rob_acc"] for t in trials}


@pytest.mark.e2e
def test_a_killed_stacked_optuna_search_resumes_its_stacks_and_its_study(tmp_path, capsys):
    import optuna

    from wartune.tune.study import OPTUNA_FILE

    space = write_space(tmp_path, strategy="optuna", trials=4, epochs=4, model="wrn10-0.5",
                        **{"lambda": {"low": 0.5, "high": 12, "log": True}})  # fmt: skip
    out = tmp_path / "runs"
    # killed mid-stack: a stack's two members asked and training, two epochs in (Ray creates a
    # searcher's trials one at a time, so the second stack may not exist yet)
    kill_when(space, out, lambda trials: len(trials) >= 2 and all(t["status"] == "running" and t["epochs"] >= 2 for t in trials),
              "--stack", "2")  # fmt: skip
    recorded = rows_of(out / "tiny")
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume", "--stack", "2"], capsys)
    assert code == 0, err
    trials = rows_of(out / "tiny", "trials.parquet")
    assert len(trials) == 4 and all(t["status"] == "finished" and t["epochs"] == 4 for t in trials)
    assert any(t["resumed_from_epoch"] for t in trials)
    assert all(e in rows_of(out / "tiny") for e in recorded)  # nothing retrained, nothing lost
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'tiny' / OPTUNA_FILE}")
    done = [tr for tr in study.trials if tr.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == len(done) == 4  # the same four, asked once and told once
    assert {round(tr.params["lam"], 12): tr.value for tr in done} == {round(t["lambda_setting"], 12): t["val_rob_acc"] for t in trials}
