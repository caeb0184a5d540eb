"""The search's end under AutoAttack: which trials it attacks, where the figures go (trials.parquet,
summary.md, compare.md, MLflow), and one tiny search through the CLI with real Ray and torchattacks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.conftest import clearly_best, write_choice_space, write_space
from tests.test_bad_input import assert_one_line_error, run_cli
from tests.test_cli import _run
from tests.test_store import _meta, _result
from wartune.results.model_files import load_model
from wartune.results.report import summary_markdown
from wartune.results.sinks import ParquetSink
from wartune.results.store import TRIAL_SCHEMA, TRIALS_FILE, read_rows
from wartune.results.tracking import log_final_attack, log_search
from wartune.results.trials import best_trial, decode_flags
from wartune.tune.compare import COLUMNS, compare_markdown, compare_rows, compare_table
from wartune.tune.final_verdict import record, trials_to_attack


def _trial(trial_id: str, rob: float, *, strategy: str = "grid", status: str = "finished", aa: float | None = None,
           checkpoint: str | None = "models/x", seed: int = 0, lam: float | None = 1.0,
           test_rob: float | None = None) -> dict[str, Any]:  # fmt: skip
    """A trials.parquet row: validation robust accuracy `rob` (what chooses, and picks the trials to
    attack); test robust accuracy `test_rob`, by default 1 − rob, so any ranking by the test split
    would be validation's reversed."""
    return {
        "trial_id": trial_id, "search": "s", "strategy": strategy, "model": "cnn-8", "width": 8.0, "dataset": "digits",
        "objective": "trades", "eps": 0.2, "seed": seed, "lambda_setting": lam, "zeta_used": None if lam is not None else 3.0,
        "lambda_final": lam or 5.0, "lambda_settled_epoch": None, "status": status, "selected_on": "validation",
        "val_nat_acc": 0.9, "val_rob_acc": rob, "val_stability": 0.6, "val_examples": 216,
        "test_nat_acc": 0.9, "test_rob_acc": 1 - rob if test_rob is None else test_rob, "test_stability": 0.6,
        "test_examples": 360, "zeta": 2.0, "wall_seconds": 10.0, "device_seconds": 10.0, "error": None, "best_epoch": 2,
        "checkpoint": checkpoint,
        "aa_rob_acc": aa, "aa_examples": None if aa is None else 360, "aa_seconds": None if aa is None else 5.0,
    }  # fmt: skip


TRIALS = [
    _trial("a", 0.50),
    _trial("b", 0.70),
    _trial("c", 0.90, status="stopped"),  # stopped by ASHA: not a result the tables rank
    _trial("d", 0.65, aa=0.41),  # attacked before the driver was restarted
    _trial("e", 0.95, checkpoint=None),  # no saved model
    _trial("w", 0.30, strategy="war", lam=None),  # another strategy: a cell of its own
    _trial("s1", 0.20, seed=1),  # another seed: a cell of its own
]


@pytest.mark.parametrize(
    ("top", "expected"),
    [(1, ["b", "w", "s1"]), (2, ["b", "w", "s1"]), (3, ["b", "a", "w", "s1"]), (None, ["b", "a", "w", "s1"])],
)
def test_the_verdict_takes_the_best_k_finished_trials_of_each_cell_and_skips_attacked_ones(top, expected):
    # top 2 of grid/seed 0 by validation is b and d; d has its figure (a resumed search), so only b runs
    # again (by the test split, which never chooses, a would lead: its test robust accuracy is b's reversed)
    assert [t["trial_id"] for t in trials_to_attack(TRIALS, top)] == expected


def test_equal_accuracies_are_taken_in_table_order_as_best_trial_breaks_ties():
    tied = [_trial("p", 0.5), _trial("q", 0.5)]
    assert [t["trial_id"] for t in trials_to_attack(tied, 1)] == [best_trial(tied)["trial_id"]] == ["p"]


def test_autoattack_columns_survive_every_rewrite_of_the_trials_table(tmp_path):
    sink = ParquetSink(tmp_path)
    for trial_id in ("a_00000", "b_00000"):
        for epoch in (1, 2, 3):
            sink.on_epoch(_meta(trial_id), _result(epoch, 2))
        sink.on_trial_end(_meta(trial_id), "finished", None)
    sink.close()
    figures = {"aa_rob_acc": 0.25, "aa_examples": 30, "aa_seconds": 7.5}
    record(tmp_path, "a_00000", figures)
    resumed = ParquetSink(tmp_path)  # a resumed search reads the table back and rewrites it
    resumed.on_trial_end(_meta("a_00000"), "finished", None)
    resumed.close()
    rows = {r["trial_id"]: r for r in read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA)}
    assert {k: rows["a_00000"][k] for k in figures} == figures
    assert (rows["b_00000"]["aa_rob_acc"], rows["b_00000"]["aa_examples"]) == (None, None)
    table = pq.read_table(tmp_path / TRIALS_FILE)
    pq.write_table(table.drop_columns(list(figures)), tmp_path / TRIALS_FILE)  # as wartune wrote it before
    assert all(r["aa_rob_acc"] is None for r in read_rows(tmp_path / TRIALS_FILE, TRIAL_SCHEMA))


def test_summary_shows_autoattack_beside_robust_and_names_the_best_under_both_rules():
    trials = [_trial("a", 0.70, aa=0.40, test_rob=0.65), _trial("b", 0.60, aa=0.45, test_rob=0.55),
              _trial("c", 0.50, test_rob=0.50)]  # fmt: skip
    md = summary_markdown("s", trials)
    assert "| val robust | natural | robust | AutoAttack | stability | test n |" in md
    assert ("Best by validation PGD-20: **a** (test robust 65.00 %, AutoAttack 40.00 %); "
            "best by test AutoAttack: **b** (AutoAttack 45.00 %, test robust 55.00 %)") in md  # fmt: skip
    # c was not attacked; its test robust accuracy 180 of 360 with its Wilson interval, 44.86–55.14 %
    assert "| 45.00 |" in md and "| 50.0 (44.9–55.1) | – | 60.0 (54.9–64.9) | 360 |" in md
    plain = summary_markdown("s", [_trial("a", 0.7), _trial("b", 0.6)])
    assert "AutoAttack" not in plain


def test_compare_shows_each_strategys_best_trial_under_autoattack_and_prices_it_apart():
    cells = {
        ("grid", "cnn-8", 0): [_trial("g1", 0.6, aa=0.41), _trial("g2", 0.5, aa=0.45)],
        ("war", "cnn-8", 0): [_trial("w", 0.55, strategy="war", lam=None)],
    }
    rows = compare_rows("c", [], cells)
    assert [(r["best_trial"], r["aa_rob_acc"], r["aa_seconds"]) for r in rows] == [("g1", 0.41, 10.0), ("w", None, 0.0)]
    grid, war = compare_table(rows)
    at = COLUMNS.index("AutoAttack %")
    assert COLUMNS[at - 2 : at] == ("robust %", "vs grid") and (grid[at], war[at]) == ("41.00", "–")
    assert grid[COLUMNS.index("cost s")] == "20"  # the tuning's cost; AutoAttack's is stated beside
    md = compare_markdown("c", rows, {"model": "cnn-4", "best_lambda": 1.0, "zeta": 2.0, "seconds": 0.0}, {"grid": 20.0, "war": 10.0})
    assert "it cost 10 device-seconds, not in the costs below" in md


def test_autoattack_figures_reach_the_trials_mlflow_runs(tmp_path):
    sink = ParquetSink(tmp_path / "s")
    for epoch in (1, 2, 3):
        sink.on_epoch(_meta("a_00000"), _result(epoch, 2))
    sink.on_trial_end(_meta("a_00000"), "finished", None)
    record(tmp_path / "s", "a_00000", {"aa_rob_acc": 0.25, "aa_examples": 30, "aa_seconds": 7.5})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_search(tmp_path / "s", uri, "s")  # a replay from Parquet carries the figure
    client = MlflowClient(uri)
    [exp] = [e for e in client.search_experiments() if e.name == "s"]
    [run] = client.search_runs([exp.experiment_id], "params.trial_id = 'a_00000'")
    assert (run.data.metrics["aa_rob_acc"], run.data.metrics["aa_seconds"]) == (0.25, 7.5)
    log_final_attack(uri, "s", {"a_00000": {"aa_rob_acc": 0.2}})  # the live search's end logs into the newest run
    assert [m.value for m in client.get_metric_history(run.info.run_id, "aa_rob_acc")] == [0.25, 0.2]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [(["--final-attack", "fgsm"], "final_attack: Input should be 'none' or 'autoattack'"),
     (["--final-attack-top", "0"], "final_attack_top: Input should be greater than or equal to 1 (got 0)")],
)  # fmt: skip
def test_a_bad_final_attack_flag_is_one_line_and_exit_2(tmp_path, capsys, flags, expected):
    out = tmp_path / "runs"
    code, stdout, err = run_cli(["search", "--space", str(write_space(tmp_path)), "--out", str(out), "--no-mlflow", *flags], capsys)
    assert_one_line_error(code, stdout, err)
    assert expected in err and not out.exists()


@pytest.mark.e2e
def test_search_attacks_its_best_trial_with_autoattack_at_the_end(tmp_path, capsys, robust_net):
    """A grid whose best trial stands clear (`CHOICE_SPACE`): λ = 6's net keeps some robustness,
    so its AutoAttack figure depends on the attack, its ε, its examples and the weights. The
    net is `robust_net`'s, trained here too (the same weights), whose flags come from `wartune
    evaluate`'s AutoAttack: the figure must be theirs, on the best epoch's weights (the same
    natural predictions as the trial's test flags), below the trial's own PGD on every example
    (none survives AutoAttack that the PGD broke) and strictly below it on the whole."""
    space = write_choice_space(tmp_path)
    argv = ["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--num-cpus", "2", "--no-mlflow",
            "--final-attack", "autoattack", "--final-attack-top", "1"]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    folder = tmp_path / "runs" / "tiny"
    trials = read_rows(folder / TRIALS_FILE, TRIAL_SCHEMA)
    best = clearly_best(trials)
    assert best == best_trial(trials) and best["lambda_setting"] == 6
    assert [t["trial_id"] for t in trials if t["aa_rob_acc"] is not None] == [best["trial_id"]]
    assert best["aa_examples"] == best["test_examples"] == 360 and best["aa_seconds"] > 0
    model, _ = load_model(folder / best["checkpoint"])
    state = model.state_dict()
    assert state.keys() == robust_net["state"].keys() and all(torch.equal(v, robust_net["state"][k]) for k, v in state.items())
    # the same attack, examples, ε and seed as `wartune evaluate --attacks autoattack` on these weights
    aa = robust_net["flags"]["autoattack"]
    assert best["aa_rob_acc"] == robust_net["results"]["autoattack"].rob_acc == aa.robust.float().mean().item()
    pgd_robust, correct = decode_flags(best["test_robust"], 360), decode_flags(best["test_correct"], 360)
    assert np.array_equal(aa.correct.numpy(), correct)  # the best epoch's weights, as the trial judged them
    assert not (aa.robust.numpy() & ~pgd_robust).any()  # no example survives AutoAttack that the trial's PGD broke
    assert 0 < best["aa_rob_acc"] < best["test_rob_acc"]  # and AutoAttack breaks some the PGD left standing
    assert "AutoAttack on 1 trials: " in err
    md = (folder / "summary.md").read_text()
    assert f"Best by validation PGD-20: **{best['trial_id']}**" in md and f"best by test AutoAttack: **{best['trial_id']}**" in md
    assert "AutoAttack" in out  # the terminal table has the column too
