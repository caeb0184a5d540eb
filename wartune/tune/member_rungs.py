"""ASHA over the members of stacks: Ray's own scheduler, asked about each member as a trial.

Ray's ASHA decides per Ray trial, and a stack is one Ray trial: left to itself it would stop
whole stacks on their best member's figure. So a stacked search with `scheduler: asha` runs
Ray's `ASHAScheduler` (the same settings as a lone search's, `asha_scheduler`) inside one
named actor, `MemberRungs`, that every stack asks after each epoch about each member under
the member's own trial id (`<stack id>-<i>`). Each answer is Ray's own rung rule on every
member's figure from every stack, so a member is stopped exactly when a lone trial with its
figures would be. The stack drops the members it is told to stop (`StackedTrainer.drop`), so
they stop costing, and their rows end `stopped` with fewer epochs, as a lone trial's do.

The actor lives as long as the search's driver; `--resume` starts a new one and refills its
rungs from epochs.parquet (`refill`) before any stack asks. A rung holds each member's figure
at the first epoch it reached the rung, whatever the order in which the members asked, so
replaying each member's recorded epochs in order rebuilds the rungs exactly. A member asked
again about an epoch already in a rung (a stack re-reporting epochs Ray had not registered)
leaves the rung as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import ray
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

ASHA = "asha"  # a stack's config key (`scheduler`) saying its members are asked before they go on
STOPPED = "stopped by ASHA"  # why a stack dropped a member that ASHA stopped


def asha_scheduler(epochs: int) -> ASHAScheduler:
    """Ray's ASHA as wartune runs it: rungs from a quarter of the epochs, halving at each."""
    return ASHAScheduler(
        time_attr="epoch", metric="val_rob_acc", mode="max", max_t=epochs,
        grace_period=max(1, epochs // 4), reduction_factor=2,
    )  # fmt: skip


class MemberRungs:
    """Ray's ASHA, judging members by id; plain Python (the actor is `ray.remote` of this)."""

    def __init__(self, epochs: int) -> None:
        self.scheduler = asha_scheduler(epochs)
        self.epochs = epochs
        self.known: set[str] = set()

    def stops(self, member: str, epoch: int, val_rob_acc: float) -> bool:
        """Whether ASHA stops `member` after `epoch` (never at the last epoch: it ends there anyway)."""
        trial = SimpleNamespace(trial_id=member)  # ASHA reads a trial's id alone
        if member not in self.known:
            self.scheduler.on_trial_add(None, trial)
            self.known.add(member)
        action = self.scheduler.on_trial_result(None, trial, {"epoch": epoch, "val_rob_acc": val_rob_acc})
        return action == TrialScheduler.STOP and epoch < self.epochs

    def refill(self, records: Iterable[tuple[str, int, float]]) -> None:
        """The rungs as the recorded epochs left them: (member, epoch, val_rob_acc), replayed in
        epoch order (the answers were given when they were first recorded)."""
        for member, epoch, value in sorted(records, key=lambda r: r[1]):
            self.stops(member, epoch, value)


def actor_name(search: str) -> str:
    return f"wartune-member-rungs-{search}"


@contextmanager
def member_rungs(search: str, epochs: int, recorded: Iterable[tuple[str, int, float]] = ()) -> Iterator[Any]:
    """The search's `MemberRungs` actor, refilled with `recorded`, for the length of the block.
    It takes no CPU from the trials and is gone after the block, however it ends."""
    actor = ray.remote(MemberRungs).options(name=actor_name(search), num_cpus=0).remote(epochs)
    try:
        ray.get(actor.refill.remote(list(recorded)))
        yield actor
    finally:
        ray.kill(actor)


class RungsClient:
    """What a stack asks the search's `MemberRungs` actor (found by the search's name)."""

    def __init__(self, search: str) -> None:
        self.actor = ray.get_actor(actor_name(search))

    def stopped(self, epoch: int, figures: dict[str, float]) -> set[str]:
        """The members (by id) among `figures` (member id → validation robust accuracy) that ASHA stops."""
        answers = ray.get([self.actor.stops.remote(m, epoch, v) for m, v in figures.items()])
        return {m for m, stop in zip(figures, answers, strict=True) if stop}
