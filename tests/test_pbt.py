"""PBT as a strategy: an exploited trial continues from another trial's checkpoint with the
new λ in its config, and its controller trains with that λ (real Ray PBT, real Parquet)."""

import json

import pytest
import torch

from tests.conftest import kill_when, move_search, rows_of, write_space
from tests.test_cli import _run
from wartune.engine.config import TrainConfig
from wartune.engine.trainer import Trainer


def test_a_fixed_lambda_is_the_configs_when_restoring_another_runs_state(tmp_path):
    # PBT's exploit in the engine's terms: train at λ 3, restore that state into a λ 6 trainer.
    config = TrainConfig(model="cnn-4", lam=3.0, epochs=2, batch_size=256, threads=1, eval={"steps": 1, "max_examples": 30})
    donor = Trainer(config)
    donor.run_epoch()
    donor.save(tmp_path / "donor.pt")
    heir = Trainer(TrainConfig.model_validate({**config.model_dump(), "lam": 6.0}))
    heir.load(tmp_path / "donor.pt")
    assert heir.epoch == 1 and heir.controller.value == 6.0
    assert torch.equal(next(heir.model.parameters()), next(donor.model.parameters()))  # the donor's weights
    heir.fit()
    assert [r.lambda_last for r in heir.history] == [3.0, 6.0]  # the donor's epoch, then its own λ


@pytest.mark.e2e
def test_pbt_moves_a_running_trials_lambda_and_the_trial_trains_with_it_across_a_kill_and_a_move(tmp_path, capsys):
    # Two trials, the bottom half exploits the top one after every epoch: three chances to move.
    # Killed once both trained two epochs (Ray keeps no PBT state: the resumed scheduler must
    # sync again past them), moved to another parent and resumed there.
    space = write_space(tmp_path, strategy="pbt", model="cnn-8", trials=2, epochs=4,
                        pbt={"interval": 1, "quantile": 0.5, "resample": 0.0},
                        **{"lambda": {"low": 0.5, "high": 12, "log": True}})  # fmt: skip
    out = tmp_path / "runs"
    kill_when(space, out, lambda trials: len(trials) == 2 and all(t["status"] == "running" and t["epochs"] >= 2 for t in trials))
    folder = move_search(out / "tiny", tmp_path / "elsewhere")
    recorded = rows_of(folder)
    code, _, err = _run(["search", "--space", str(space), "--out", str(folder.parent), "--no-mlflow", "--resume"], capsys)
    assert code == 0, err
    trials = rows_of(folder, "trials.parquet")
    assert len(trials) == 2 and {t["strategy"] for t in trials} == {"pbt"} and {t["status"] for t in trials} == {"finished"}
    epochs = rows_of(folder)
    assert all(e in epochs for e in recorded) and not (out / "tiny").exists()  # nothing lost, nothing at the old place
    moved = 0
    for t in trials:
        rows = sorted((e for e in epochs if e["trial_id"] == t["trial_id"]), key=lambda e: e["epoch"])
        assert [e["epoch"] for e in rows] == [1, 2, 3, 4]
        for e in rows:  # every epoch's every step trained with the λ the trial's config held then
            assert e["lambda_min"] == e["lambda_max"] == pytest.approx(e["lambda_setting"])
            assert 0.5 <= e["lambda_setting"] <= 12
        moved += len({e["lambda_setting"] for e in rows}) > 1
        # the trial's row: the λ it ended with, the one its last epoch trained with
        assert t["lambda_final"] == pytest.approx(rows[-1]["lambda_last"]) == pytest.approx(t["lambda_setting"])
    assert moved >= 1  # the bottom half took the top trial's weights and a perturbed λ
    for path in (folder / "ray" / "tune").glob("*/result.json"):  # Ray's own log agrees, result by result
        for line in path.read_text().splitlines():
            r = json.loads(line)
            assert r["lambda_last"] == pytest.approx(r["config"]["lam"])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lambda": [1, 6]}, "strategy 'pbt' needs 'lambda' as {low, high, log}"),
        ({"scheduler": "asha"}, "its own scheduler"),
        ({"pbt": {"quantile": 0.7}}, "quantile"),
        ({"pbt": {"interval": 0}}, "interval"),
        ({"seeds": 2}, "one population per seed"),
        ({"model": ["cnn-4", "cnn-8"]}, "one model per search"),
    ],
)
def test_pbt_keys_are_checked(changes, message):
    from wartune.engine.config import validate
    from wartune.errors import ConfigError
    from wartune.tune.spaces import SearchSpace

    base = {"strategy": "pbt", "model": "cnn-8", "trials": 4, "lambda": {"low": 1, "high": 12}}
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        validate(SearchSpace, {**base, **changes}, source="s.yaml")


def test_pbt_scheduler_follows_the_space():
    from wartune.tune.pbt import population_based_training
    from wartune.tune.spaces import SearchSpace

    space = SearchSpace.model_validate({"strategy": "pbt", "model": "cnn-8", "trials": 4, "epochs": 10,
                                        "lambda": {"low": 1, "high": 12}, "pbt": {"quantile": 0.5}})  # fmt: skip
    pbt = population_based_training(space)
    assert (pbt._perturbation_interval, pbt._quantile_fraction, pbt._synch) == (2, 0.5, True)  # a quarter of 10 epochs
    clip = pbt._custom_explore_fn
    assert clip({"lam": 30.0})["lam"] == 12 and clip({"lam": 0.2})["lam"] == 1 and clip({"lam": 5.0})["lam"] == 5
