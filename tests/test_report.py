"""summary.md and the terminal table: what they say about the runs they show."""

from __future__ import annotations

from tests.test_final_verdict import _trial
from wartune.results.report import rich_table, summary_markdown


def test_runs_on_synthetic_data_are_marked_as_measuring_cost_not_robustness():
    synthetic = {**_trial("a", 0.1), "dataset": "synthetic-cifar10"}
    for text in (summary_markdown("s", [synthetic]), str(rich_table([synthetic], "t").caption)):
        assert "Synthetic data (synthetic-cifar10: random images and labels)" in text
        assert "measure cost, not robustness" in text
    real = [_trial("a", 0.7)]
    assert "Synthetic" not in summary_markdown("s", real) and rich_table(real, "t").caption is None
