"""The progress lines of a search: one per finished epoch off a terminal, naming each trial's
seed when the search repeats its settings with several seeds."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from rich.console import Console

from tests.test_store import _meta, _result
from wartune.results.progress import ProgressSink


@pytest.mark.parametrize(
    ("show_seed", "label"),
    [(True, "00001 cnn-4 λ=1 seed 1  epoch 1/3"), (False, "00001 cnn-4 λ=1  epoch 1/3")],
)
def test_progress_lines_name_the_seed_when_the_search_runs_several(show_seed, label):
    text = io.StringIO()
    console = Console(file=text, width=160)  # not a terminal: a line per epoch
    sink = ProgressSink(2, 3, console=console, show_seed=show_seed)
    figures = {"val_nat_acc": 0.9, "val_rob_acc": 0.42, "val_stability": 0.61}  # the epoch's validation figures
    for seed in (0, 1):
        sink.on_epoch(replace(_meta(f"a_0000{seed}"), seed=seed), _result(1, 2) | figures)
    sink.on_trial_end(replace(_meta("a_00001"), seed=1), "failed", "diverged")
    sink.close()
    lines = text.getvalue().splitlines()
    assert len(lines) == 3 and lines[1] == f"{label}  val nat 90.0%  rob 42.0%  stab 61.0%  λ 0.50"
    assert lines[2] == (
        "trial 00001 cnn-4 λ=1 seed 1 failed: diverged"
        if show_seed
        else "trial 00001 cnn-4 λ=1 failed: diverged"
    )
