"""End to end: calibrate ζ on a thin digits net, then WAR-transfer it to a wider one."""

import dataclasses
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import write_space
from tests.test_cli import _error_line, _run
from wartune.engine.lambdas import WarRule, WarRuleState, WarState, war_ema_step, war_rule_step
from wartune.results.zeta import PAPER_ENTRY, ZetaRegistry

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> Path:
    """runs/ with a calibration of wrn10-0.5 (λ grid {3, 6}, 2 epochs) in its registry."""
    folder = tmp_path_factory.mktemp("war")
    space = write_space(folder, model="wrn10-0.5", **{"lambda": [3, 6]})
    with pytest.raises(SystemExit) as done:
        from wartune.cli import main

        main(["calibrate", "--model", "wrn10-0.5", "--space", str(space), "--out", str(folder / "runs")])
        raise SystemExit(0)
    assert (done.value.code or 0) == 0
    return folder


def test_calibrate_stores_the_best_trials_zeta(calibrated):
    runs = calibrated / "runs"
    entry = ZetaRegistry(runs / "zeta.parquet").lookup("wrn10-0.5", "digits", "trades", 0.2)
    trials = pq.read_table(runs / "calibrate-wrn10-0.5" / "trials.parquet").to_pylist()
    best = max(trials, key=lambda t: t["val_rob_acc"])  # chosen on validation
    assert entry.source == "calibrated" and entry.search == "calibrate-wrn10-0.5"
    assert (entry.best_lambda, entry.zeta) == (best["lambda_setting"], best["zeta"])
    # the entry keeps the chosen trial's test figures
    assert (entry.rob_acc, entry.nat_acc, entry.stability) == (best["test_rob_acc"], best["test_nat_acc"], best["test_stability"])
    epochs = pq.read_table(runs / "calibrate-wrn10-0.5" / "epochs.parquet").to_pylist()
    last = [e for e in epochs if e["trial_id"] == best["trial_id"] and e["epoch"] == 2][0]
    assert entry.zeta == pytest.approx(last["l_nat"] / last["l_rob"])


def test_transfer_runs_war_beside_the_untuned_lambda(calibrated, capsys):
    runs = calibrated / "runs"
    space = write_space(calibrated, model="wrn10-1", epochs=3)
    code, out, err = _run(
        ["transfer", "--zeta-from", "wrn10-0.5", "--model", "wrn10-1", "--space", str(space),
         "--compare-untuned", "--out", str(runs)], capsys,
    )  # fmt: skip
    assert code == 0, err
    folder = runs / "transfer-wrn10-0.5-to-wrn10-1"  # named after the thin net and the wide target
    trials = {t["strategy"]: t for t in pq.read_table(folder / "trials.parquet").to_pylist()}
    assert set(trials) == {"war", "untuned"}
    entry = ZetaRegistry(runs / "zeta.parquet").lookup("wrn10-0.5", "digits", "trades", 0.2)
    war, untuned = trials["war"], trials["untuned"]
    assert war["zeta_used"] == entry.zeta and war["zeta_from"] == "wrn10-0.5" and war["lambda_setting"] is None
    assert untuned["lambda_setting"] == entry.best_lambda and untuned["lambda_final"] == entry.best_lambda
    steps = [s for s in pq.read_table(folder / "steps.parquet").to_pylist() if s["trial_id"] == war["trial_id"]]
    trace = [s["lambda_t"] for s in sorted(steps, key=lambda s: (s["epoch"], s["step"]))]
    assert len(trace) == 3 * 10 and max(trace) > 0 and min(trace) >= 0  # ceil(1221 / 128) steps an epoch
    assert war["lambda_final"] == pytest.approx(trace[-1])
    state = WarRuleState(0.0)  # the default controller: α 0.3 per epoch, 0.3 / 10 a step, each step's ratio
    for s in sorted(steps, key=lambda s: (s["epoch"], s["step"])):
        state = war_rule_step(state, s["l_nat"], s["l_rob"], WarRule(entry.zeta, 0.3 / 10, "step"))
        assert s["lambda_t"] == pytest.approx(state.lambda_t, rel=1e-12)
    assert "WAR→" in out and "untuned" in out
    assert "controller: epoch (α 0.3 per epoch, spread over its steps; λ_0 0, each step's l_nat/l_rob) (the default)" in err


def test_transfer_with_lambda0_thin_starts_from_the_registry_entrys_best_lambda(tmp_path, capsys):
    registry = tmp_path / "zeta.parquet"
    thin = dataclasses.replace(PAPER_ENTRY, model="wrn10-0.5", dataset="digits", eps=0.2, best_lambda=3.0, zeta=5.0)
    ZetaRegistry(registry).put(thin)
    space = write_space(tmp_path, epochs=1, war={"lambda0": "thin", "ratio": "ema", "ema_beta": 0.5})
    code, _, err = _run(
        ["transfer", "--zeta-from", "wrn10-0.5", "--space", str(space), "--registry", str(registry),
         "--out", str(tmp_path / "runs"), "--no-mlflow"], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "controller: war: {ratio: ema, ema_beta: 0.5, lambda0: thin}" in err
    steps = pq.read_table(tmp_path / "runs" / "transfer-wrn10-0.5" / "steps.parquet").to_pylist()
    steps.sort(key=lambda s: (s["epoch"], s["step"]))
    first = steps[0]
    assert first["l_rob"] >= 1e-6  # a defined first step: its average ratio is its own l_nat / l_rob
    assert first["lambda_t"] == pytest.approx(max(3.0 + 0.1 * (5.0 - first["l_nat"] / first["l_rob"]), 0.0))
    state = WarState(3.0)  # the whole trace, replayed with the plain-Python rule
    for s in steps:
        state = war_ema_step(state, s["l_nat"], s["l_rob"], zeta=5.0, alpha=0.1, beta=0.5, min_l_rob=1e-6)
        assert s["lambda_t"] == pytest.approx(state.lambda_t, rel=1e-12)


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--zeta-from", "wrn99-9"], "no ζ for 'wrn99-9'"),
        (["--zeta-from", "wrn34-0.5"], "ζ for 'wrn34-0.5' was measured for wrn34-0.5 on cifar10"),
        (["--zeta-from", "wrn10-0.5", "--objective", "madry"], "not for digits, madry"),
    ],
)
def test_transfer_refusals_exit_2_with_one_line(calibrated, capsys, argv, expected):
    code, _, err = _run(["transfer", *argv, "--model", "cnn-8", "--out", str(calibrated / "runs"), "--name", "x"], capsys)
    assert expected in _error_line(code, err)
    assert not (calibrated / "runs" / "x").exists()


def test_transfer_with_a_settling_controller_trains_as_its_reference_rule(tmp_path, capsys):
    # hold λ_0 = 3 until the one-epoch window's ratio reaches ζ, then α 0.1 per epoch (10 steps of
    # digits: 1,221 training images once 216 are held out for validation)
    registry = tmp_path / "zeta.parquet"
    thin = dataclasses.replace(PAPER_ENTRY, model="wrn10-0.5", dataset="digits", eps=0.2, best_lambda=3.0, zeta=40.0)
    ZetaRegistry(registry).put(thin)
    war = {"lambda0": "thin", "hold": True, "ratio": "window", "alpha_per": "epoch"}
    space = write_space(tmp_path, epochs=2, war=war)
    code, _, err = _run(
        ["transfer", "--zeta-from", "wrn10-0.5", "--space", str(space), "--registry", str(registry),
         "--out", str(tmp_path / "runs"), "--no-mlflow"], capsys,
    )  # fmt: skip
    assert code == 0, err
    assert "controller: war: {alpha_per: epoch, ratio: window, hold: true, lambda0: thin, window: one epoch}" in err
    steps = pq.read_table(tmp_path / "runs" / "transfer-wrn10-0.5" / "steps.parquet").to_pylist()
    steps.sort(key=lambda s: (s["epoch"], s["step"]))
    assert len(steps) == 2 * 10
    rule, state = WarRule(40.0, 0.1 / 10, "window", window=10, hold=True), WarRuleState(3.0, holding=True)
    for s in steps:  # the whole trace, replayed with the plain-Python rule
        state = war_rule_step(state, s["l_nat"], s["l_rob"], rule)
        assert s["lambda_t"] == pytest.approx(state.lambda_t, rel=1e-12)
    assert steps[0]["lambda_t"] == 3.0  # the first ratio (about 200) is far above ζ: held


def test_two_calibrations_and_a_compare_leave_three_entries_and_transfer_names_the_one_it_uses(tmp_path, capsys):
    """Issue 28: 0.2.0's compare overwrote the user's calibration of the same thin net, and
    transfer did not say which calibration it used."""
    runs = tmp_path / "runs"
    space = write_space(tmp_path, model="wrn10-0.5", **{"lambda": [3, 6]})
    for name in ("calibrate-wrn10-0.5", "second-look"):
        code, _, err = _run(["calibrate", "--model", "wrn10-0.5", "--space", str(space), "--name", name, "--out", str(runs)], capsys)
        assert code == 0, err
    table3 = write_space(tmp_path, name="cmp", strategy="compare", thin_model="wrn10-0.5", model=["wrn10-1"],
                         strategies=["untuned", "grid", "war"], **{"lambda": [3, 6]})  # fmt: skip
    code, _, err = _run(["compare", "--space", str(table3), "--out", str(runs), "--no-mlflow"], capsys)
    assert code == 0, err
    entries = [e for e in ZetaRegistry(runs / "zeta.parquet").entries() if e.model == "wrn10-0.5"]
    assert sorted(e.search for e in entries) == ["calibrate-wrn10-0.5", "cmp/calibrate", "second-look"]  # none replaced
    # each says what its choice stood on: the λ grid, epochs × seeds and the chosen trial's validation figure
    assert {(e.calibration_lambdas, e.calibration_epochs, e.calibration_seeds) for e in entries} == {("3,6", 2, 1)}
    searches = {"calibrate-wrn10-0.5": runs / "calibrate-wrn10-0.5", "second-look": runs / "second-look", "cmp/calibrate": runs / "cmp" / "calibrate"}
    for e in entries:
        chosen = [t for t in pq.read_table(searches[e.search] / "trials.parquet").to_pylist() if t["lambda_setting"] == e.best_lambda]
        assert [t["val_rob_acc"] for t in chosen] == [e.val_rob_acc]
    code, out, err = _run(["zeta", "list", "--out", str(runs)], capsys)
    assert code == 0 and all(search in out for search in ("calibrate-wrn10-0.5", "cmp/calibrate", "second-look"))
    wide = write_space(tmp_path, model="wrn10-1", epochs=1)
    code, _, err = _run(["transfer", "--zeta-from", "wrn10-0.5", "--model", "wrn10-1", "--space", str(wide), "--out", str(runs)], capsys)
    line = _error_line(code, err)  # ambiguous: refused in one line naming them and how to choose
    assert "3 ζ calibrations of 'wrn10-0.5'" in line and "wrn10-0.5@latest" in line
    code, out, err = _run(["transfer", "--zeta-from", "wrn10-0.5@second-look", "--model", "wrn10-1", "--space", str(wide),
                           "--out", str(runs), "--no-mlflow"], capsys)  # fmt: skip
    assert code == 0, err
    chosen = next(e for e in entries if e.search == "second-look")
    assert "second-look" in err and f"{chosen.zeta:.3f}" in err  # the line names the entry it runs from
    war = pq.read_table(runs / "transfer-wrn10-0.5-to-wrn10-1" / "trials.parquet").to_pylist()
    assert {t["zeta_used"] for t in war} == {chosen.zeta}
