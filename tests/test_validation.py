"""The validation split as a search sees it: the same held-out images on the driver (its manifest)
and in every trial, legacy trials that keep choosing on the test split, the warning when the
winner's lead is within its interval, compare's paired difference, and --validation's bad values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_bad_input import assert_one_line_error, run_cli
from wartune.engine.trainer import Trainer
from wartune.results import manifest
from wartune.results.intervals import paired_difference, wilson
from wartune.results.trials import encode_flags, rivals_within_noise
from wartune.tune.compare import noise_lines, robust_difference
from wartune.tune.params import TrialParams, trial_params
from wartune.tune.spaces import load_space
from wartune.tune.strategies import held_out_split

SPACE = {"name": "v", "strategy": "grid", "model": "cnn-4", "lambda": [1, 6], "epochs": 1, "attack": {"steps": 2},
         "eval": {"steps": 2, "max_examples": 30}, "resources": {"cpu": 1, "gpu": 0}, "stack": 1}  # fmt: skip


def test_the_driver_records_the_images_every_trial_holds_out(digits, tmp_path):
    space = load_space("lambda_grid", SPACE)
    record = held_out_split(space, digits)
    assert record is not None and (record["seed"], record["examples"], record["of_training_images"]) == (0, 216, 1437)
    for seed in (0, 3):  # a trial's own seed does not move the split
        params = trial_params(space, "cnn-4", 6.0, seed=seed)
        trainer = Trainer(TrialParams.parse(params).config, digits)
        assert trainer.validation_indices.tolist() == record["indices"]
    manifest.record(tmp_path, record)
    manifest.record(tmp_path)  # a later write (an upgrade) keeps it
    assert manifest.recorded_validation(tmp_path) == record
    other = held_out_split(load_space("lambda_grid", {**SPACE, "validation": {"seed": 1, "examples": 100}}), digits)
    assert other is not None and other["examples"] == 100 and other["indices"] != record["indices"][:100]


def test_a_trial_that_an_old_release_began_keeps_choosing_on_the_test_split(digits):
    params = trial_params(load_space("lambda_grid", SPACE), "cnn-4", 6.0)
    assert TrialParams.parse(params).config.validation.held_out and TrialParams.parse(params).meta("t").selected_on == "validation"
    old = {**params, "base": {k: v for k, v in params["base"].items() if k != "validation"}}  # 0.2.0's params
    legacy = TrialParams.parse(old)
    assert not legacy.config.validation.held_out and legacy.meta("t").selected_on == "test"
    trainer = Trainer(legacy.config, digits)
    assert trainer.data.val_x is trainer.data.test_x.to(trainer.device) or (trainer.data.val_y == digits.test_y).all()
    assert len(trainer.data.train_y) == 1437 and trainer.validation_indices.numel() == 0  # nothing held out


def _trial(trial_id: str, val_rob: float, status: str = "finished", n: int = 216) -> dict:
    return {"trial_id": trial_id, "status": status, "val_rob_acc": val_rob, "val_examples": n}


def test_rivals_are_the_trials_inside_the_winners_interval():
    best = 151 / 216  # 69.9 %
    lo, _ = wilson(151, 216)
    assert lo == pytest.approx(0.6348, abs=1e-4)  # Wilson: (p + z²/2n ± z√(p(1-p)/n + z²/4n²)) / (1 + z²/n)
    trials = [_trial("a", best), _trial("b", lo + 1e-6), _trial("c", lo - 1e-6), _trial("d", best, status="failed")]
    assert [t["trial_id"] for t in rivals_within_noise(trials)] == ["b"]
    assert rivals_within_noise([_trial("a", best), _trial("c", lo - 1e-6)]) == []
    assert rivals_within_noise([]) == []


def _flags(pattern: list[int], repeat: int) -> str:
    return encode_flags(np.array(pattern * repeat, dtype=bool))


def test_compare_pairs_each_strategy_with_the_grid_on_the_same_test_images():
    # 100 images: the grid gets 60 right, WAR the same 60 minus 10 plus 2 others (52)
    grid_flags = np.array([1] * 60 + [0] * 40, dtype=bool)
    war_flags = grid_flags.copy()
    war_flags[:10] = False
    war_flags[60:62] = True
    grid = {"test_robust": encode_flags(grid_flags), "test_examples": 100}
    war = {"test_robust": encode_flags(war_flags), "test_examples": 100}
    difference = robust_difference(war, grid)
    assert difference == paired_difference(war_flags, grid_flags)
    assert difference is not None and difference.diff == pytest.approx(-0.08) and (difference.only_a, difference.only_b) == (2, 10)
    assert difference.hi < 0  # 10 against 2 discordant images: behind, beyond noise
    assert robust_difference({**war, "test_robust": None}, grid) is None  # a table from before the flags
    assert robust_difference({**war, "test_examples": 99}, grid) is None
    rows = [
        {"model": "m", "strategy": "grid", "rob_vs_grid": None, "rob_vs_grid_lo": None, "rob_vs_grid_hi": None},
        {"model": "m", "strategy": "war", "rob_vs_grid": difference.diff, "rob_vs_grid_lo": difference.lo,
         "rob_vs_grid_hi": difference.hi},
        {"model": "m", "strategy": "optuna", "rob_vs_grid": 0.01, "rob_vs_grid_lo": -0.02, "rob_vs_grid_hi": 0.04},
    ]  # fmt: skip
    lines = noise_lines(rows)
    assert len(lines) == 2 and lines[0].startswith("- war on m: -8.0 (") and lines[0].endswith("behind the grid.")
    assert lines[1] == "- optuna on m: +1.0 (-2.0 to +4.0) points of test robust accuracy against the grid's best λ: within noise."


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "validation.examples: a validation split needs at least one image per class"),
        ("2.5", "--validation: a fraction of the training split is between 0 and 1"),
        ("half", "--validation: expected a number of images (1000) or a fraction of the training split (0.15)"),
    ],
)
def test_a_validation_split_that_cannot_choose_is_refused_in_one_line(value, message, tmp_path, capsys):
    out = tmp_path / "runs"
    code, stdout, stderr = run_cli(["search", "--space", "lambda_grid", "--out", str(out), "--validation", value, "--no-mlflow"], capsys)
    assert_one_line_error(code, stdout, stderr)
    assert message in stderr and not Path(out).exists()


def test_a_space_cannot_mark_a_new_search_as_choosing_on_the_test_split(tmp_path, capsys):
    space = tmp_path / "old.yaml"
    space.write_text("strategy: grid\nmodel: cnn-4\nlambda: [1, 6]\nvalidation: {held_out: false}\n")
    out = tmp_path / "runs"
    code, stdout, stderr = run_cli(["search", "--space", str(space), "--out", str(out), "--no-mlflow"], capsys)
    assert_one_line_error(code, stdout, stderr)
    assert "validation held_out false is how wartune marks a trial that 0.2.0 began" in stderr and not out.exists()
