"""Per-trial rules: when WAR's λ_t settled, and what a trial's summary takes from where."""

from __future__ import annotations

from typing import Any

import pytest

from wartune.results.trials import TrialMeta, TrialSummary, lambda_settled_epoch


def _epoch(epoch: int, low: float, high: float, last: float, skipped: int = 0, rob: float = 0.5) -> dict[str, Any]:
    return {"epoch": epoch, "lambda_min": low, "lambda_max": high, "lambda_last": last, "war_skipped_steps": skipped,
            "nat_acc": 0.9, "rob_acc": rob, "stability": 0.6, "lipschitz": 1.0, "eval_examples": 90,
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


def _meta(lambda_setting: float | None) -> TrialMeta:
    return TrialMeta("s", "t1", "grid", "cnn-8", 8.0, "digits", "trades", 0.2, 0, 3, lambda_setting, None,
                     None if lambda_setting is not None else 30.0, 1.0, 0.0)  # fmt: skip


def test_summary_totals_skipped_steps_and_settles_only_war():
    rows = [_epoch(1, 0, 5, 5, skipped=3), _epoch(2, 5, 9.5, 9.5, skipped=0), _epoch(3, 9.5, 10, 10, skipped=2)]
    war = TrialSummary.of(rows, _meta(None))
    assert (war.war_skipped_steps, war.lambda_settled_epoch, war.lambda_final) == (5, 3, 10)
    fixed = TrialSummary.of([_epoch(e, 6, 6, 6) for e in (1, 2)], _meta(6.0))
    assert (fixed.war_skipped_steps, fixed.lambda_settled_epoch) == (0, None)


def test_a_finished_trials_result_is_its_full_split_evaluation_and_the_epochs_figures_stay_beside_it():
    rows = [_epoch(1, 6, 6, 6, rob=0.4), _epoch(2, 6, 6, 6, rob=0.5), _epoch(3, 6, 6, 6, rob=0.45)]
    running = TrialSummary.of(rows, _meta(6.0))
    assert (running.rob_acc, running.eval_examples, running.metrics_from, running.best_epoch) == (0.5, 90, "best_epoch", 2)
    full = {"nat_acc": 0.8, "rob_acc": 0.47, "stability": 0.55, "lipschitz": 2.0, "eval_examples": 360}
    done = TrialSummary.of(rows, _meta(6.0), full)
    assert {k: getattr(done, k) for k in full} == full and done.metrics_from == "full_split"
    assert (done.best_epoch, done.best_epoch_rob_acc, done.final_rob_acc) == (2, 0.5, 0.45)


def test_trials_at_chance_accuracy_are_named_whatever_their_stability():
    # a net that predicts one class is 100 % stable: 0.2.0 reported it without a word (issue 28)
    from wartune.results.trials import at_chance

    trials = [
        {"trial_id": "a", "status": "finished", "nat_acc": 0.10, "stability": 1.0},
        {"trial_id": "b", "status": "finished", "nat_acc": 0.149, "stability": 0.9},
        {"trial_id": "c", "status": "finished", "nat_acc": 0.15, "stability": 0.5},
        {"trial_id": "d", "status": "failed", "nat_acc": 0.05, "stability": 1.0},
        {"trial_id": "e", "status": "finished", "nat_acc": None, "stability": None},
    ]
    assert [t["trial_id"] for t in at_chance(trials, 10)] == ["a", "b"]
    assert [t["trial_id"] for t in at_chance(trials, 2)] == ["a", "b", "c"]
