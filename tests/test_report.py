"""summary.md and the terminal table: what they say about the runs they show."""

from __future__ import annotations

import math

from tests.test_final_verdict import _trial
from wartune.results.report import rich_table, summary_markdown


def test_runs_on_synthetic_data_are_marked_as_measuring_cost_not_robustness():
    synthetic = {**_trial("a", 0.1), "dataset": "synthetic-cifar10"}
    for text in (summary_markdown("s", [synthetic]), str(rich_table([synthetic], "t").caption)):
        assert "Synthetic data (synthetic-cifar10: random images and labels)" in text
        assert "measure cost, not robustness" in text
    real = [_trial("a", 0.7)]
    assert "Synthetic" not in summary_markdown("s", real) and rich_table(real, "t").caption is None


def _wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95 % Wilson score interval, written out here so the test does not trust the code under test."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _cell(successes: int, n: int) -> str:
    """How the table shows successes/n: the percentage and its interval, one decimal each."""
    lo, hi = _wilson(successes, n)
    return f"{100 * successes / n:.1f} ({100 * lo:.1f}–{100 * hi:.1f})"


def _trials() -> list[dict]:
    # a has the higher test robust accuracy (238 of 360), b the higher validation one (162 of 216):
    # b is the best trial, and the test split only reports; c was stopped before its test reading
    a = {**_trial("a", 135 / 216, test_rob=238 / 360, lam=1.0), "val_examples": 216}
    b = {**_trial("b", 162 / 216, test_rob=198 / 360, lam=6.0), "val_examples": 216}
    c = {**_trial("c", 205 / 216, status="stopped", lam=12.0), "val_examples": 216}
    c.update(dict.fromkeys(("test_nat_acc", "test_rob_acc", "test_stability", "test_examples")))
    return [a, b, c]


def test_the_table_shows_test_figures_with_wilson_intervals_and_stars_the_best_by_validation():
    md = summary_markdown("s", _trials())
    assert "| trial | strategy | model | λ | val robust | natural | robust | stability | test n | l_nat/l_rob | wall s | status |" in md
    assert _cell(238, 360) == "66.1 (61.1–70.8)"  # the interval by hand, as the table prints it
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ") and "grid" in line}
    # val robust on the 216 validation images; natural (324), robust, stability (216) of the 360 test images
    assert rows["a"] == f"| a | grid | cnn-8 | 1 | {_cell(135, 216)} | {_cell(324, 360)} | 66.1 (61.1–70.8) | {_cell(216, 360)} | 360 | 2.00 | 10 | finished |"
    assert rows["b ★"] == f"| b ★ | grid | cnn-8 | 6 | {_cell(162, 216)} | {_cell(324, 360)} | {_cell(198, 360)} | {_cell(216, 360)} | 360 | 2.00 | 10 | finished |"
    assert rows["c"] == f"| c | grid | cnn-8 | 12 | {_cell(205, 216)} | – | – | – | – | 2.00 | 10 | stopped |"
    assert (
        f"Best trial **b** (cnn-8, λ 6, trades, digits, ε 0.2), chosen on validation: robust {_cell(162, 216)} % on 216 "
        f"validation images at its epoch 2; those weights on the test split: robust {_cell(198, 360)} %, natural "
        f"{_cell(324, 360)} %, stability {_cell(216, 360)} % (360 images)."
    ) in md
    assert "chose their best epoch on the test split" not in md


def test_stored_intervals_are_shown_as_stored_and_a_table_chosen_on_test_says_so():
    a, b, c = _trials()
    b = {**b, "test_rob_acc_lo": 0.5, "test_rob_acc_hi": 0.6}  # trials.parquet's interval columns, as written
    md = summary_markdown("s", [a, b, c])
    assert "| 55.0 (50.0–60.0) |" in md
    old = [{**t, "selected_on": "test"} for t in (a, b)]  # begun by 0.2.0: the best epoch was chosen on the test split
    assert "**Trials begun by wartune 0.2.0 or before chose their best epoch on the test split**" in summary_markdown("s", old)


def test_the_terminal_table_highlights_the_best_trial_by_validation():
    table = rich_table(_trials(), "t")
    styles = {cells: row.style for cells, row in zip(table.columns[0].cells, table.rows, strict=True)}
    assert styles == {"a": None, "b ★": "bold green", "c": None}


def test_the_settings_a_search_varied_are_columns_after_lambda_and_name_the_best_trials_values():
    # lr and weight decay searched with λ (a `search:` block): each trial's values are in the
    # table; ε, the attack and the batch, the same for every trial, are not
    a, b, c = _trials()
    varied = [{**t, "lr": lr, "weight_decay": wd, "attack_steps": 10, "batch_size": 128}
              for t, lr, wd in ((a, 0.05, 0.0005), (b, 0.2, 0.0001), (c, 0.1, None))]  # fmt: skip
    md = summary_markdown("s", varied)
    assert "| trial | strategy | model | λ | lr | wd | val robust | natural |" in md
    assert f"| b ★ | grid | cnn-8 | 6 | 0.2 | 0.0001 | {_cell(162, 216)} |" in md
    assert f"| c | grid | cnn-8 | 12 | 0.1 | – | {_cell(205, 216)} |" in md
    assert "Best trial **b** (cnn-8, λ 6, lr 0.2, wd 0.0001, trades," in md
    assert [c.header for c in rich_table(varied, "t").columns][3:6] == ["λ", "lr", "wd"]
    assert "| λ | val robust |" in summary_markdown("s", _trials())  # nothing varied: no such column
