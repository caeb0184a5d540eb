"""ASHA over stacked members (`tune/member_rungs.py`): Ray's own rung rule judges each member as a
trial, a stopped member leaves its stack and its rows end `stopped`, and a resumed search
refills the rungs from what it recorded."""

from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from tests.conftest import kill_when, rows_of, write_space
from tests.test_cli import _run
from wartune.tune.member_rungs import MemberRungs, asha_scheduler

# eight members of two stacks, eight epochs: rungs at epochs 2 and 4 (grace 8 // 4, halving)
VALUES = [0.30, 0.10, 0.40, 0.15, 0.50, 0.05, 0.35, 0.20]
FIGURES = {f"s{s}-{i}": VALUES[4 * s + i] for s in range(2) for i in range(4)}


def _ray_asha_stops(records: list[tuple[str, int, float]], epochs: int) -> dict[str, int]:
    """Ray's ASHA itself, fed the records in order as a lone search's results (a stopped trial
    reports no more; the last epoch ends a trial anyway): the epoch at which it stops each."""
    asha, stopped = asha_scheduler(epochs), {}
    for member, epoch, value in records:
        if member in stopped or epoch == epochs:
            continue
        trial = SimpleNamespace(trial_id=member)
        if epoch == 1:
            asha.on_trial_add(None, trial)
        if asha.on_trial_result(None, trial, {"epoch": epoch, "val_rob_acc": value}) == TrialScheduler.STOP:
            stopped[member] = epoch
    return stopped


def test_a_member_is_stopped_exactly_when_rays_asha_would_stop_a_lone_trial_with_its_figures():
    records = [(m, epoch, v + 0.01 * epoch) for epoch in range(1, 9) for m, v in FIGURES.items()]
    rungs, stopped = MemberRungs(8), {}
    for member, epoch, value in records:
        if member not in stopped and rungs.stops(member, epoch, value):
            stopped[member] = epoch
    assert stopped == _ray_asha_stops(records, 8) and stopped  # the lagging members, at a rung
    assert set(stopped) <= {m for m, v in FIGURES.items() if v < max(FIGURES.values())}  # the best one trains on
    assert all(epoch in (2, 4) for epoch in stopped.values())  # ASHA decides at its rungs only
    assert not MemberRungs(2).stops("a-0", 2, 0.0)  # the last epoch: it ends there, not stopped


def test_refilled_rungs_answer_as_the_rungs_the_recorded_epochs_built():
    records = [(m, epoch, v) for epoch in (1, 2) for m, v in FIGURES.items()]
    live = MemberRungs(8)
    for member, epoch, value in records:
        live.stops(member, epoch, value)
    refilled = MemberRungs(8)
    refilled.refill(list(reversed(records)))  # in whatever order the table holds them
    assert [refilled.stops(f"n-{i}", 2, 0.05 * i) for i in range(1, 9)] == [live.stops(f"n-{i}", 2, 0.05 * i) for i in range(1, 9)]
    assert refilled.stops("n-9", 2, 0.01) and not refilled.stops("n-10", 2, 0.9)  # the rung is full: a cutoff holds
    late = MemberRungs(8)
    late.refill([("a-0", 3, 0.9), ("a-0", 2, 0.1)])  # a rung keeps a member's figure at the epoch it reached it
    assert late.stops("b-0", 2, 0.05) and not late.stops("c-0", 2, 0.5)  # the cutoff is 0.1, not 0.9


@pytest.mark.e2e
def test_asha_stops_lagging_members_of_a_stack_and_the_stack_trains_on_without_them(tmp_path, capsys):
    # an MLP learns in four epochs here (cnn-4 stays at chance, where every member ties)
    space = write_space(tmp_path, model="mlp-64", epochs=4, stack=4, scheduler="asha", **{"lambda": [1, 6, 0, 40]},
                        eval={"steps": 3, "max_examples": 200})  # fmt: skip
    out = tmp_path / "runs"
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--num-cpus", "1"], capsys)
    assert code == 0, err
    trials = {t["trial_id"]: t for t in rows_of(out / "tiny", "trials.parquet")}
    epochs = rows_of(out / "tiny")
    assert len(trials) == 4 and len({t["stack"] for t in trials.values()}) == 1  # one stack of four members
    records = sorted(((e["trial_id"], e["epoch"], e["val_rob_acc"]) for e in epochs), key=lambda r: (r[1], r[0]))
    stops = _ray_asha_stops(records, 4)
    for trial_id, trial in trials.items():
        trained = sorted(e["epoch"] for e in epochs if e["trial_id"] == trial_id)
        assert trained == list(range(1, stops.get(trial_id, 4) + 1))  # no epoch after its stop
        assert trial["status"] == ("stopped" if trial_id in stops else "finished") and trial["epochs"] == len(trained)
    assert 0 < len(stops) < 4  # the lagging members stopped, the best trained on


@pytest.mark.e2e
def test_a_killed_asha_search_keeps_its_stopped_members_stopped_and_its_rungs_filled(tmp_path, capsys):
    # Two stacks of two, one after the other; killed once the second has trained an epoch, after
    # the first ended: the second's later rungs must hold the first's figures again after --resume.
    # cnn-8, not an MLP: a stacked mlp-64 epoch took 90 ms, less than the kill takes to land, and
    # once the second stack ended before it (ASHA stopped both members at epoch 2) nothing was left to resume.
    space = write_space(tmp_path, model="cnn-8", epochs=6, stack=2, scheduler="asha", max_concurrent=1,
                        **{"lambda": [1, 6, 0, 40]}, eval={"steps": 3, "max_examples": 200})  # fmt: skip
    out = tmp_path / "runs"

    def second_stack_started(trials: list[dict]) -> bool:
        stacks = sorted({t["stack"] for t in trials})
        return len(stacks) == 2 and all(t["epochs"] >= 1 and t["status"] == "running" for t in trials if t["stack"] == stacks[1])

    kill_when(space, out, second_stack_started)
    recorded = rows_of(out / "tiny")
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow", "--resume"], capsys)
    assert code == 0, err
    trials = {t["trial_id"]: t for t in rows_of(out / "tiny", "trials.parquet")}
    epochs = rows_of(out / "tiny")
    assert all(e in epochs for e in recorded)  # nothing retrained, nothing lost
    assert all(t["resumed_from_epoch"] >= 1 for t_id, t in trials.items() if "_00001-" in t_id)  # the second stack went on
    # the order in which the members asked: the first stack's epochs, then the second's
    records = sorted(((e["trial_id"], e["epoch"], e["val_rob_acc"]) for e in epochs), key=lambda r: (r[0].rpartition("-")[0], r[1], r[0]))
    stops = _ray_asha_stops(records, 6)
    for trial_id, trial in trials.items():
        trained = sorted(e["epoch"] for e in epochs if e["trial_id"] == trial_id)
        assert trained == list(range(1, stops.get(trial_id, 6) + 1))
        assert trial["status"] == ("stopped" if trial_id in stops else "finished") and trial["epochs"] == len(trained)
    assert any(trial_id.endswith(("00001-0", "00001-1")) for trial_id in stops)  # the second stack met the first's rungs
