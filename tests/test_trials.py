"""Per-trial rules: when WAR's λ_t settled, and what a trial's summary takes from where."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from wartune.results.trials import (
    TEST_KEYS,
    TrialMeta,
    TrialSummary,
    best_trial,
    decode_flags,
    encode_flags,
    lambda_settled_epoch,
    rivals_within_noise,
)


def _epoch(epoch: int, low: float, high: float, last: float, skipped: int = 0, rob: float = 0.5) -> dict[str, Any]:
    return {"epoch": epoch, "lambda_min": low, "lambda_max": high, "lambda_last": last, "war_skipped_steps": skipped,
            "val_nat_acc": 0.9, "val_rob_acc": rob, "val_stability": 0.6, "val_lipschitz": 1.0, "val_examples": 90,
            "zeta": 3.0, "zeta_step_std": 0.1, "wall_seconds": 2.0}  # fmt: skip


# final λ_t 10.0, so the band is [9, 11]: an epoch counts when all its λ_t lie in it.
@pytest.mark.parametrize(
    "ranges,expected",
    [
        ([(0, 5, 5), (5, 9.5, 9.5), (9.5, 10.5, 10), (9.8, 10.2, 10)], 3),  # epoch 2 ends at 9.5 but started at 5
        ([(0, 5, 5), (9.1, 10.9, 10.9), (9.5, 10.5, 10)], 2),
        ([(0, 5, 5), (8.9, 10, 10), (9, 11, 10)], 3),  # 8.9 is out; the band's edges 9 and 11 are in
        ([(9, 10, 10), (12, 12, 12), (9, 11, 10)], 3),  # back in band, but epoch 2 strayed: from 3
        ([(9.5, 10, 10), (9.9, 10.1, 10)], 1),  # settled from the start
        ([(0, 5, 5), (5, 10, 10)], None),  # still moving in the last epoch: never settled
    ],
)
def test_lambda_settles_at_the_first_epoch_after_which_every_lambda_stays_within_ten_percent(ranges, expected):
    rows = [_epoch(e, low, high, last) for e, (low, high, last) in enumerate(ranges, start=1)]
    assert lambda_settled_epoch(list(reversed(rows))) == expected  # any row order


def test_a_lambda_settled_at_zero_needs_every_lambda_at_zero():
    rows = [_epoch(1, 0.0, 0.3, 0.0), _epoch(2, 0.0, 0.0, 0.0)]
    assert lambda_settled_epoch(rows) == 2
    assert lambda_settled_epoch([]) is None


def test_a_real_war_run_settles_where_its_step_trace_says(digits):
    """A WAR run whose λ_t drifts from λ_0 = 7 (each step bounded to 0.05) and then stays put:
    the summary's settled epoch (from the epoch records' min and max) is the one read off every
    step's λ_t by hand. Settling neither at once nor never, so a rule that always answers 1, the
    last epoch or None fails here (a search's tiny WAR trials never settle: this is its test)."""
    from dataclasses import asdict

    from wartune.engine.config import TrainConfig
    from wartune.engine.trainer import Trainer

    war = {"kind": "war", "zeta": 100.0, "lambda0": 7.0, "max_step": 0.05}
    config = TrainConfig(model="cnn-8", lam=war, epochs=4, attack={"steps": 3}, eval={"steps": 3, "max_examples": 30}, threads=1)
    trainer = Trainer(config, digits)
    trainer.fit()
    final = trainer.step_traces[-1].lambda_t[-1]
    in_band = [all(abs(lam - final) <= 0.1 * final for lam in trace.lambda_t) for trace in trainer.step_traces]
    by_hand = next(e for e in range(1, 5) if all(in_band[e - 1 :]))
    assert 1 < by_hand < 4, in_band  # it moved, then settled before the end
    summary = TrialSummary.of([asdict(r) for r in trainer.history], _meta(None))
    assert summary.lambda_settled_epoch == by_hand


def _meta(lambda_setting: float | None) -> TrialMeta:
    return TrialMeta("s", "t1", "grid", "cnn-8", 8.0, "digits", "trades", 0.2, 0, 3, lambda_setting, None,
                     None if lambda_setting is not None else 30.0, 1.0, 0.0)  # fmt: skip


def test_summary_totals_skipped_steps_and_settles_only_war():
    rows = [_epoch(1, 0, 5, 5, skipped=3), _epoch(2, 5, 9.5, 9.5, skipped=0), _epoch(3, 9.5, 10, 10, skipped=2)]
    war = TrialSummary.of(rows, _meta(None))
    assert (war.war_skipped_steps, war.lambda_settled_epoch, war.lambda_final) == (5, 3, 10)
    fixed = TrialSummary.of([_epoch(e, 6, 6, 6) for e in (1, 2)], _meta(6.0))
    assert (fixed.war_skipped_steps, fixed.lambda_settled_epoch) == (0, None)


def _wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95 % Wilson score interval, written out here so the test does not trust the code under test."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_a_finished_trials_result_is_its_test_reading_and_the_best_epochs_validation_figures_stay_beside_it():
    rows = [_epoch(1, 6, 6, 6, rob=0.4), _epoch(2, 6, 6, 6, rob=0.5), _epoch(3, 6, 6, 6, rob=0.45)]
    running = TrialSummary.of(rows, _meta(6.0))
    assert (running.val["val_rob_acc"], running.val["val_examples"], running.best_epoch) == (0.5, 90, 2)
    assert running.selected_on == "validation"
    assert all(v is None for v in running.test.values())  # not read yet: no test figure, no interval
    robust = np.arange(360) % 2 == 0  # 180 of 360
    correct = np.arange(360) % 10 < 8  # 288 of 360
    test = {"test_nat_acc": 0.8, "test_rob_acc": 0.5, "test_stability": 0.55, "test_lipschitz": 2.0,
            "test_examples": 360, "test_robust": encode_flags(robust), "test_correct": encode_flags(correct)}  # fmt: skip
    done = TrialSummary.of(rows, _meta(6.0), test)
    assert {k: done.test[k] for k in TEST_KEYS} == test
    assert (done.test["test_rob_acc_lo"], done.test["test_rob_acc_hi"]) == pytest.approx(_wilson(180, 360))
    assert (done.test["test_rob_acc_lo"], done.test["test_rob_acc_hi"]) == pytest.approx((0.4486, 0.5514), abs=1e-4)
    assert (done.test["test_nat_acc_lo"], done.test["test_nat_acc_hi"]) == pytest.approx(_wilson(288, 360))
    assert (done.test["test_stability_lo"], done.test["test_stability_hi"]) == pytest.approx(_wilson(198, 360))
    # the best epoch is chosen by validation, and its validation figures keep their own interval on 90 images
    assert (done.best_epoch, done.val["val_rob_acc"], done.final_val["final_val_rob_acc"]) == (2, 0.5, 0.45)
    assert (done.val["val_rob_acc_lo"], done.val["val_rob_acc_hi"]) == pytest.approx(_wilson(45, 90))
    assert (done.val["val_nat_acc_lo"], done.val["val_nat_acc_hi"]) == pytest.approx(_wilson(81, 90))
    flat = done.as_dict()
    assert flat["test_rob_acc"] == 0.5 and flat["val_rob_acc"] == 0.5 and flat["final_val_rob_acc"] == 0.45
    assert not {"val", "final_val", "test"} & set(flat)


def test_the_best_epoch_is_the_highest_validation_robust_accuracy_the_earliest_on_ties():
    rows = [_epoch(1, 6, 6, 6, rob=0.3), _epoch(2, 6, 6, 6, rob=0.6), _epoch(3, 6, 6, 6, rob=0.6)]
    summary = TrialSummary.of(list(reversed(rows)), _meta(6.0))
    assert (summary.best_epoch, summary.val["val_rob_acc"]) == (2, 0.6)


def _trial(trial_id: str, val: float, test: float | None, status: str = "finished", n: int = 216) -> dict[str, Any]:
    return {"trial_id": trial_id, "status": status, "val_rob_acc": val, "val_examples": n, "test_rob_acc": test}


def test_the_best_trial_is_chosen_by_validation_never_by_test():
    trials = [_trial("a", 0.50, 0.70), _trial("b", 0.55, 0.40), _trial("c", 0.90, 0.95, status="stopped"),
              _trial("d", float("nan"), 0.99), _trial("e", None, 0.99)]  # fmt: skip
    assert best_trial(trials)["trial_id"] == "b"  # a has the higher test robust accuracy: the test split never chooses
    assert best_trial([_trial("c", 0.9, 0.9, status="failed")]) is None


def test_rivals_within_noise_reach_the_best_trials_validation_lower_bound():
    lo, _ = _wilson(108, 216)  # the best trial: 0.5 of 216 validation images, lower bound about 0.4335
    trials = [_trial("best", 0.5, 0.4), _trial("near", lo + 0.001, 0.6), _trial("far", lo - 0.001, 0.6),
              _trial("stopped", 0.49, None, status="stopped")]  # fmt: skip
    assert [t["trial_id"] for t in rivals_within_noise(trials)] == ["near"]
    assert rivals_within_noise([_trial("best", 0.5, 0.4), _trial("far", 0.2, 0.6)]) == []


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 360, 10000])
def test_flags_round_trip_through_text(n):
    flags = np.random.default_rng(n).random(n) < 0.4
    text = encode_flags(flags)
    assert isinstance(text, str) and text.isascii()
    assert len(text) == 4 * math.ceil(math.ceil(n / 8) / 3)  # base64 of ceil(n/8) bytes
    back = decode_flags(text, n)
    assert back.dtype == np.bool_ and np.array_equal(back, flags)
    assert np.array_equal(decode_flags(encode_flags(flags.tolist()), n), flags)  # a list, as JSON gives back


def test_trials_at_chance_accuracy_are_named_whatever_their_stability():
    # a net that predicts one class is 100 % stable: 0.2.0 reported it without a word (issue 28)
    from wartune.results.trials import at_chance

    trials = [
        {"trial_id": "a", "status": "finished", "val_nat_acc": 0.10, "val_stability": 1.0, "test_nat_acc": 0.5},
        {"trial_id": "b", "status": "finished", "val_nat_acc": 0.149, "val_stability": 0.9, "test_nat_acc": 0.5},
        {"trial_id": "c", "status": "finished", "val_nat_acc": 0.15, "val_stability": 0.5, "test_nat_acc": 0.1},
        {"trial_id": "d", "status": "failed", "val_nat_acc": 0.05, "val_stability": 1.0, "test_nat_acc": None},
        {"trial_id": "e", "status": "finished", "val_nat_acc": None, "val_stability": None, "test_nat_acc": 0.1},
    ]
    assert [t["trial_id"] for t in at_chance(trials, 10)] == ["a", "b"]
    assert [t["trial_id"] for t in at_chance(trials, 2)] == ["a", "b", "c"]
