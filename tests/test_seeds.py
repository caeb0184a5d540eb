"""--seeds: repeats folded into mean ± sd by hand, the calibration judged by its mean, and
the trial parameters a repeated search hands Ray (fast: no Ray run here)."""

import math

import pytest
from ray import tune

from wartune.errors import ConfigError
from wartune.results.report import seed_markdown, width_blocks
from wartune.results.seeds import MeanSd, repeated
from wartune.results.zeta import best_trial_entry
from wartune.tune.compare import compare_rows, compare_table, totals
from wartune.tune.params import TrialParams
from wartune.tune.spaces import SearchSpace
from wartune.tune.strategies import count_trials, param_space


def _trial(trial_id, lam, seed, rob, *, model="cnn-8", width=8.0, strategy="grid", zeta=2.0, cost=10.0, nat=0.9, test_rob=None):
    """A finished trial: validation robust accuracy `rob` (what chooses), test robust accuracy
    `test_rob` (what is reported; `rob` unless given), test stability 0.1 above it."""
    test_rob = rob if test_rob is None else test_rob
    return {
        "trial_id": trial_id, "search": "s", "strategy": strategy, "model": model, "width": width, "dataset": "digits",
        "objective": "trades", "eps": 0.2, "seed": seed, "lambda_setting": lam, "zeta_used": None if lam is not None else 3.0,
        "lambda_final": lam if lam is not None else 5.0, "lambda_settled_epoch": None if lam is not None else 2,
        "status": "finished", "selected_on": "validation", "val_nat_acc": nat, "val_rob_acc": rob,
        "val_stability": rob + 0.1, "val_examples": 216, "test_nat_acc": nat, "test_rob_acc": test_rob,
        "test_stability": test_rob + 0.1, "test_examples": 360, "zeta": zeta,
        "zeta_step_std": 0.5, "device_seconds": cost, "wall_seconds": cost, "error": None,
    }  # fmt: skip


def _wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95 % Wilson score interval, written out here so the test does not trust the code under test."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_mean_and_sample_sd_by_hand():
    stats = MeanSd.of([0.5, 0.7])
    assert stats.mean == pytest.approx(0.6) and stats.sd == pytest.approx(math.sqrt(0.02)) and stats.n == 2
    assert stats.text(100) == "60.00 ± 14.14"
    one = MeanSd.of([0.25, None, float("nan")])  # unknown and non-finite repeats do not count
    assert (one.mean, one.sd, one.n, one.text(100)) == (0.25, None, 1, "25.00")
    assert MeanSd.of([]).text() == "–"


def test_calibration_picks_the_lambda_with_the_best_mean_over_seeds():
    # On validation λ 6 has the single best run (0.8), but λ 1 the best mean (0.6 against 0.55);
    # on test λ 6 leads (0.85 against 0.45), which must not count: the entry reports λ 1's test means.
    trials = [
        _trial("a", 1.0, 0, 0.5, zeta=2.0, test_rob=0.4), _trial("b", 1.0, 1, 0.7, zeta=4.0, test_rob=0.5),
        _trial("c", 6.0, 0, 0.8, zeta=9.0, test_rob=0.9), _trial("d", 6.0, 1, 0.3, zeta=9.0, test_rob=0.8),
    ]  # fmt: skip
    entry = best_trial_entry(trials, "calib")
    assert entry.best_lambda == 1.0
    assert entry.zeta == pytest.approx(3.0) and entry.rob_acc == pytest.approx(0.45) and entry.stability == pytest.approx(0.55)
    assert entry.nat_acc == pytest.approx(0.9)
    single = best_trial_entry([t for t in trials if t["seed"] == 0], "calib")  # one seed: the best run, as before
    assert (single.best_lambda, single.zeta, single.rob_acc) == (6.0, 9.0, 0.9)


def test_compare_rows_per_seed_and_the_table_mean_sd_with_summed_costs():
    calibration = [_trial("c0", 1.0, 0, 0.5, cost=3.0), _trial("c1", 1.0, 1, 0.5, cost=5.0)]
    # each seed's grid chooses by validation (g0b, g1a), whatever the test figures say (g0a, g1b lead there)
    cells = {
        ("grid", "cnn-8", 0): [_trial("g0a", 1.0, 0, 0.5, test_rob=0.65), _trial("g0b", 6.0, 0, 0.6, test_rob=0.55)],
        ("grid", "cnn-8", 1): [_trial("g1a", 1.0, 1, 0.8, test_rob=0.57), _trial("g1b", 6.0, 1, 0.4, test_rob=0.9)],
        ("war", "cnn-8", 0): [_trial("w0", None, 0, 0.55, strategy="war", cost=12.0)],
        ("war", "cnn-8", 1): [_trial("w1", None, 1, 0.65, strategy="war", cost=12.0)],
    }
    rows = compare_rows("c", calibration, cells)
    assert [(r["strategy"], r["seed"]) for r in rows] == [("grid", 0), ("grid", 1), ("war", 0), ("war", 1)]
    war0, war1 = rows[2], rows[3]
    assert (war0["calibration_seconds"], war0["total_seconds"], war0["cost_vs_grid"]) == (3.0, 15.0, 0.75)
    assert (war1["calibration_seconds"], war1["total_seconds"], war1["cost_vs_grid"]) == (5.0, 17.0, 0.85)
    assert [r["best_trial"] for r in rows[:2]] == ["g0b", "g1a"]  # each seed's grid keeps its own best λ
    assert [(r["val_rob_acc"], r["test_rob_acc"]) for r in rows[:2]] == [(0.6, 0.55), (0.8, 0.57)]
    # each row's test robust accuracy carries its Wilson interval on the 360 test images
    lo, hi = _wilson(round(0.55 * 360), 360)
    assert (rows[0]["test_rob_acc_lo"], rows[0]["test_rob_acc_hi"]) == pytest.approx((lo, hi))
    grid, war = compare_table(rows)
    # grid: test robust 0.55 and 0.57 → mean 0.56, sd 0.01·√2, Student-t interval 0.56 ± t(0.975, 1)·0.01;
    # stability 0.65 and 0.67 → 66.00 ± 1.41; λ 6 and 1 → 3.50 ± 3.54; 2 seeds, 4 trials, 40 s
    half = 12.706204736174694 * 0.01
    robust = f"56.0 ({100 * (0.56 - half):.1f}–{100 * (0.56 + half):.1f})"
    assert robust == "56.0 (43.3–68.7)"
    assert grid == ["cnn-8", "grid", "3.50 ± 3.54", "–", "90.00 ± 0.00", robust, "–", "–", "66.00 ± 1.41", "2", "4", "40", "1.00"]
    # WAR: (15 + 17) / 40 = 0.80; settled epochs 2 and 2 → 2.0 ± 0.0
    assert war[1:5] == ["war", "5.00 ± 0.00", "2.0 ± 0.0", "90.00 ± 0.00"] and war[-3:] == ["2", "32", "0.80"]
    assert totals(rows, 8.0) == {"grid": 40.0, "war": 32.0}  # the calibration of both seeds, once
    wider = compare_rows("c", calibration, {**cells, ("grid", "cnn-16", 0): [_trial("x", 1.0, 0, 0.9, model="cnn-16", width=16.0)]})
    assert [r["model"] for r in wider] == ["cnn-8"] * 4 + ["cnn-16"]  # by width, then strategy, then seed
    assert compare_table(wider)[-1][:2] == ["cnn-16", "grid"] and compare_table(wider)[-1][-4:] == ["1", "1", "10", "1.00"]


def test_summary_and_width_tables_fold_seeds_into_mean_sd():
    # λ 1 has the better validation mean on cnn-8 (0.6 against 0.4): starred, though λ 6's test mean is higher
    trials = [
        _trial("a", 1.0, 0, 0.5, test_rob=0.45), _trial("b", 1.0, 1, 0.7, test_rob=0.65),
        _trial("c", 6.0, 0, 0.4, test_rob=0.8), _trial("d", 6.0, 1, 0.4, test_rob=0.8),
        _trial("e", 1.0, 0, 0.9, model="cnn-16", width=16.0), _trial("f", 1.0, 1, 0.7, model="cnn-16", width=16.0),
    ]  # fmt: skip
    assert repeated(trials) and not repeated(trials[:1])
    robust = width_blocks(trials)[0][2]
    assert robust == [["1", "55.00 ± 14.14 ★", "80.00 ± 14.14 ★"], ["6", "80.00 ± 0.00", "–"]]
    md = seed_markdown(trials)
    assert "## Mean ± sd over seeds 0, 1" in md
    # the test figures, mean ± sd: robust 0.45 and 0.65, stability 0.1 above
    assert "| grid | cnn-8 | 1 | 1.00 ± 0.00 | 90.00 ± 0.00 | 55.00 ± 14.14 | 65.00 ± 14.14 | 2/2 | 20 |" in md
    assert seed_markdown(trials[:1]) == ""


def _space(**changes) -> SearchSpace:
    return SearchSpace.model_validate({"model": "cnn-8", "lambda": [1, 6], "seed": 5, **changes})


def test_seeds_become_a_grid_dimension_and_each_trial_trains_its_seed():
    space = _space(seeds=3)
    assert space.seed_values == [5, 6, 7]
    params = param_space(space)
    assert params["seed"] == tune.grid_search([5, 6, 7])
    assert count_trials(space, params) == 6
    assert TrialParams.parse({**params, "lam": 6.0, "seed": 7}).config.seed == 7
    single = param_space(_space())
    assert single["seed"] == 5 and count_trials(_space(), single) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"strategy": "optuna", "lambda": {"low": 1, "high": 6}, "seeds": 2}, "one population per seed"),
        ({"war_variants": {"thin": {"lambda0": "thin"}}}, "compare keys"),
        ({"strategy": "compare", "thin_model": "cnn-4", "war_variants": {"a b": {}}}, "variant name"),
        ({"strategy": "compare", "thin_model": "cnn-4", "strategies": ["grid"], "war_variants": {"t": {}}}, "add war"),
        ({"strategy": "compare", "thin_model": "cnn-4", "strategies": []}, "at least one"),
        ({"seeds": 0}, "seeds"),
    ],
)
def test_seed_and_variant_keys_are_checked(changes, message):
    from wartune.engine.config import validate

    with pytest.raises(ConfigError, match=message):
        validate(SearchSpace, {"model": "cnn-8", "lambda": [1, 6], **changes}, source="s.yaml")
