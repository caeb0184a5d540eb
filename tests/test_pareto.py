"""The trade-off front: non-domination on hand-worked points, the per-model marks in
trials.parquet, and the summary's front section."""

from __future__ import annotations

from typing import Any

import pytest

from wartune.results.pareto import dominates, mark_pareto, pareto_mask
from wartune.results.report import front_markdown
from wartune.results.sinks import ParquetSink
from wartune.results.store import EPOCH_SCHEMA, TRIAL_SCHEMA, TRIALS_FILE, read_rows
from wartune.results.trials import TEST_RESULT, TrialMeta


@pytest.mark.parametrize(
    "points,expected",
    [
        # (robust, natural): (0.5, 0.5) is beaten on both by (0.6, 0.7); the rest trade off
        ([(0.4, 0.9), (0.5, 0.5), (0.6, 0.7), (0.7, 0.6)], [True, False, True, True]),
        ([(0.6, 0.8), (0.6, 0.8), (0.5, 0.8)], [True, True, False]),  # equal points: both on the front
        ([(0.6, 0.8), (0.6, 0.7)], [True, False]),  # equal on one, worse on the other: dominated
        ([(0.3, 0.2)], [True]),  # a single point is its own front
        ([], []),
        # three objectives: (0.5, 0.5, 0.9) is worse on the first two but best on the third
        ([(0.6, 0.6, 0.1), (0.5, 0.5, 0.9), (0.5, 0.5, 0.05)], [True, True, False]),
    ],
)
def test_pareto_mask_keeps_exactly_the_non_dominated_points(points, expected):
    assert pareto_mask(points) == expected


def test_minimising_turns_the_front_around():
    points = [(1.0, 4.0), (2.0, 2.0), (3.0, 3.0), (4.0, 1.0)]
    assert pareto_mask(points, maximise=False) == [True, True, False, True]
    assert pareto_mask(points) == [True, False, True, True]
    assert dominates((3.0, 3.0), (2.0, 2.0)) and not dominates((3.0, 3.0), (3.0, 3.0))


def _trial(trial_id: str, model: str, rob: float | None, nat: float, stability: float = 0.5,
           status: str = "finished", lam: float | None = 1.0,
           test: tuple[float, float, float] | None = None) -> dict[str, Any]:  # fmt: skip
    """A trial whose validation figures are (rob, nat, stability); its test figures, unless given, are
    1 minus each, so every ordering on the test split is the reverse of validation's: a front judged
    on the test split would differ."""
    test_rob, test_nat, test_stability = test or (1 - (rob or 0), 1 - nat, 1 - stability)
    return {"trial_id": trial_id, "model": model, "val_rob_acc": rob, "val_nat_acc": nat, "val_stability": stability,
            "test_rob_acc": test_rob, "test_nat_acc": test_nat, "test_stability": test_stability,
            "test_examples": 100, "status": status, "lambda_setting": lam, "lambda_final": lam or 3.0}  # fmt: skip


def test_marks_a_front_per_model_among_finished_trials_only():
    trials = [
        _trial("a", "wrn10-1", 0.6, 0.9),
        _trial("b", "wrn10-1", 0.5, 0.8, stability=0.7),  # dominated by a (but the more stable; it beats a on test)
        _trial("c", "wrn10-1", 0.9, 0.95, status="stopped"),  # would dominate, but did not finish
        _trial("d", "wrn10-2", 0.4, 0.7),  # a wider net's own front: not beaten by a
        _trial("e", "wrn10-2", None, 0.99),  # no robust figure: not judged
    ]
    marked = mark_pareto(trials)
    assert {t["trial_id"]: t["pareto"] for t in marked} == {"a": True, "b": False, "c": False, "d": True, "e": False}
    assert {t["pareto_by"] for t in marked} == {"rob_acc,nat_acc"} and "pareto" not in trials[0]
    by_stability = mark_pareto(trials, ["rob_acc", "stability"])
    assert [t["pareto"] for t in by_stability] == [True, True, False, True, False]
    assert {t["pareto_by"] for t in by_stability} == {"rob_acc,stability"}


def _meta(trial_id: str, lam: float) -> TrialMeta:
    return TrialMeta(
        search="s", trial_id=trial_id, strategy="optuna", model="cnn-4", width=4.0, dataset="digits",
        objective="trades", eps=0.2, seed=0, epochs_planned=1, lambda_setting=lam, zeta_from=None,
        zeta_used=None, cpus=1.0, gpus=0.0,
    )  # fmt: skip


def test_parquet_sink_marks_the_front_by_the_searchs_objectives_at_every_write(tmp_path):
    sink = ParquetSink(tmp_path, ["nat_acc", "stability"])
    figures = {"a": (0.5, 0.9, 0.4), "b": (0.6, 0.8, 0.5), "c": (0.4, 0.7, 0.6)}  # (rob, nat, stability)
    for i, (trial_id, (rob, nat, stability)) in enumerate(figures.items()):
        result: dict[str, Any] = {name: 0.5 for name in EPOCH_SCHEMA.names} | {"epoch": 1, "val_examples": 30}
        result |= {"val_rob_acc": rob, "val_nat_acc": nat, "val_stability": stability}
        # the test reading reverses every ordering: the front must not follow it
        test = {"test_nat_acc": 1 - nat, "test_rob_acc": 1 - rob, "test_stability": 1 - stability, "test_lipschitz": 1.0,
                "test_examples": 360, "test_robust": None, "test_correct": None}  # fmt: skip
        sink.on_epoch(_meta(trial_id, float(i + 1)), result | {TEST_RESULT: test})
        running = {t["trial_id"]: t for t in read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)}[trial_id]
        assert running["status"] == "running" and running["pareto"] is False  # not judged before it finished
        sink.on_trial_end(_meta(trial_id, float(i + 1)), "finished", None)
    rows = read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)
    # by (natural, stability) none dominates another; by the default (robust, natural) c would be off
    assert {t["trial_id"]: t["pareto"] for t in rows} == {"a": True, "b": True, "c": True}
    assert {t["pareto_by"] for t in rows} == {"nat_acc,stability"}
    ParquetSink(tmp_path).close()  # a sink without objectives re-marks by robust and natural accuracy
    assert {t["trial_id"]: t["pareto"] for t in read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)} == {"a": True, "b": True, "c": False}


def test_summary_lists_the_front_per_model_best_first_objective_first():
    # the front and its order are by validation; the cells are the test figures (on 100 images) with
    # their Wilson intervals: a's test robust accuracy is the highest, but its validation one the lowest
    trials = mark_pareto([_trial("a", "m", 0.6, 0.9, lam=2.0, test=(0.70, 0.90, 0.5)),
                          _trial("b", "m", 0.7, 0.8, lam=9.0, test=(0.66, 0.80, 0.5)),
                          _trial("c", "m", 0.5, 0.5, lam=30.0, test=(0.99, 0.99, 0.99)),
                          _trial("w", "m", 0.65, 0.85, lam=None, test=(0.60, 0.85, 0.5))])  # fmt: skip
    text = front_markdown(trials)
    assert text.startswith("## Trade-off front") and "robust accuracy, natural accuracy on the validation split" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| trial")]
    assert lines == [
        "| b | m | 9 | 80.0 (71.1–86.7) | 66.0 (56.3–74.5) | 50.0 (40.4–59.6) |",
        "| w | m | WAR→3.00 | 85.0 (76.7–90.7) | 60.0 (50.2–69.1) | 50.0 (40.4–59.6) |",
        "| a | m | 2 | 90.0 (82.6–94.5) | 70.0 (60.4–78.1) | 50.0 (40.4–59.6) |",
    ]
    assert front_markdown([_trial("a", "m", 0.6, 0.9)]) == ""  # not marked (a table from before the column)
