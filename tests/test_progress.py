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
    [(True, "grid 00001 cnn-4 λ=1 seed 1  epoch 1/3"), (False, "grid 00001 cnn-4 λ=1  epoch 1/3")],
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
    assert len(lines) == 3 and lines[1].endswith(f"] {label}  val nat 90.0%  rob 42.0%  stab 61.0%  λ 0.50")
    assert lines[2] == (
        "trial 00001 cnn-4 λ=1 seed 1 failed: diverged"
        if show_seed
        else "trial 00001 cnn-4 λ=1 failed: diverged"
    )


def test_a_log_reads_the_searchs_count_and_time_left_under_its_heading():
    """Off a terminal: a heading naming the search (a compare's part k of n), then each epoch's line
    with the epochs done of all and the time left at this run's pace since its first batch of
    epochs (the workers' start is no epoch's cost); a trial that ASHA stopped takes its unrun
    epochs out of the total."""
    text, now = io.StringIO(), [100.0]
    sink = ProgressSink(2, 4, console=Console(file=text, width=160), title="compare c, part 2 of 3: grid on cnn-4",
                        clock=lambda: now[0])  # fmt: skip
    figures = {"val_nat_acc": 0.9, "val_rob_acc": 0.42, "val_stability": 0.61}
    now[0] += 30  # the workers start: the first batch of epochs arrives together
    sink.on_epoch(_meta("a_00000"), _result(1, 2) | figures)
    sink.on_epoch(_meta("a_00001"), _result(1, 2) | figures)
    sink.on_trial_end(_meta("a_00001"), "finished", None)  # stopped after 1 of 4 epochs: 3 never run
    now[0] += 15
    sink.on_epoch(_meta("a_00000"), _result(2, 2) | figures)  # 15 s an epoch since the first batch
    now[0] += 15
    sink.on_epoch(_meta("a_00000"), _result(3, 2) | figures)
    sink.close()
    lines = text.getvalue().splitlines()
    assert lines[0] == "wartune: compare c, part 2 of 3: grid on cnn-4: 2 trials × 4 epochs"
    assert lines[1].startswith("[1/8 epochs] grid 00000 cnn-4 λ=1  epoch 1/4")  # no pace before a second batch
    assert lines[2].startswith("[2/8 epochs] grid 00001")
    assert lines[3].startswith("[3/5 epochs, 30 s left] grid 00000 cnn-4 λ=1  epoch 2/4")  # 15 s each, 2 left
    assert lines[4].startswith("[4/5 epochs, 15 s left] grid 00000 cnn-4 λ=1  epoch 3/4")


def test_a_resumed_search_paces_its_time_left_by_the_epochs_it_trains_itself():
    text, now = io.StringIO(), [0.0]
    sink = ProgressSink(1, 5, console=Console(file=text, width=160), clock=lambda: now[0])
    figures = {"val_nat_acc": 0.9, "val_rob_acc": 0.42, "val_stability": 0.61}
    for epoch in (1, 2):  # reported again at once from the checkpoint it resumed at
        sink.on_epoch(_meta("a_00000"), _result(epoch, 2) | figures | {"resumed_from_epoch": 2})
    for epoch in (3, 4):
        now[0] += 20
        sink.on_epoch(_meta("a_00000"), _result(epoch, 2) | figures | {"resumed_from_epoch": 2})
    lines = text.getvalue().splitlines()
    assert [line.split("]")[0] for line in lines] == ["[1/5 epochs", "[2/5 epochs", "[3/5 epochs", "[4/5 epochs, 20 s left"]
