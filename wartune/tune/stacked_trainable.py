"""The stacked trainable: one Ray trial trains a stack of λ-trials as one grouped network.

Its config is a stack's (`stacks.py`): each member's config is what its lone trial's would
be, so each member is built as a lone `Trainer` and the `StackedTrainer` trains them
together. Every epoch it reports one result holding every member's report (`members`, each
exactly what the lone trainable reports for that trial, plus its place `member`), which
the driver callback (and a stacked Optuna search, `stacked_search.py`) fans out into one
trial per member. The figures at the top (`TOP_LEVEL`) are the best member's, for Ray's own
tables and checks only.

A stack's checkpoint holds each member's lone checkpoint files in `member-<i>/` (trainer
state, best model, progress) and the stack's progress (`resume.StackProgress`): its epoch,
the members it dropped (diverged or stopped), with why, and in a PBT stack each member's
lineage and the own reports of the members an exploit moved at that epoch. A restarted stack
loads every member from its newest readable checkpoint, reports each dropped member's error
again, re-reports the epochs Ray had not registered (as the lone trainable does: a moved
member's from its kept report, its state being the donor's) and stacks the others again.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from ray import tune

from wartune.engine.data import TensorDataset
from wartune.engine.records import EpochRecord
from wartune.engine.stack_pbt import apply_exploits, exploits, set_lambda
from wartune.engine.stacked_trainer import EpochOutcome, StackedTrainer
from wartune.engine.trainer import DivergedError, Trainer
from wartune.tune.member_rungs import ASHA, STOPPED, RungsClient
from wartune.tune.params import train_config_of
from wartune.tune.resume import (
    StackProgress,
    checkpoint_epoch,
    member_folder,
    resume_stack,
    trial_checkpoints,
    write_progress,
)
from wartune.tune.stacked_pbt import rule_of
from wartune.tune.stacks import MEMBERS, SCHEDULER, member_count, member_id, member_params
from wartune.tune.trial_reports import TrialPlace, diverged_metrics, epoch_metrics, save_trial_files

# The best member's figures at the top of a stack's result: for Ray's own tables and checks only.
TOP_LEVEL = ("val_rob_acc", "best_rob_acc", "best_nat_acc", "best_stability")


class StackReporter:
    """Reports a stack's epochs and writes its checkpoints; remembers which members it dropped."""

    def __init__(self, trainers: list[Trainer], progress: StackProgress, place: TrialPlace) -> None:
        self.trainers, self.place = trainers, place
        self.dropped, self.lineage = progress.dropped, progress.lineage
        self.moved_reports = progress.moved_reports  # the next checkpoint's (StackProgress)
        # diverged before this (re)start: their errors go out again with the first report
        # (a member that ASHA stopped has no error: its rows end `stopped`, as a lone trial's)
        self.unreported = {i: DivergedError(why) for i, why in self.dropped.items() if not why.startswith(STOPPED)}

    def report(self, epoch: int, outcomes: dict[int, EpochOutcome], checkpoint: bool = True,
               kept: dict[int, dict[str, Any]] | None = None) -> None:  # fmt: skip
        self.send(self.metrics(epoch, outcomes, kept), checkpoint)

    def metrics(self, epoch: int, outcomes: dict[int, EpochOutcome], kept: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
        """The epoch's result, from the members as they stand now (before any PBT exploit moves
        them), and `kept`: members' reports made before an exploit moved them, as they were."""
        outcomes = {**self.unreported, **outcomes}
        self.unreported = {}
        members = list((kept or {}).values())
        for i, outcome in sorted(outcomes.items()):
            if isinstance(outcome, DivergedError):
                self.dropped[i] = str(outcome)
                members.append({**diverged_metrics(self.trainers[i], outcome), "member": i})
            else:
                members.append({**epoch_metrics(outcome, self.trainers[i], self.place), "member": i})
        members.sort(key=lambda m: m["member"])
        trained = [m for m in members if "error" not in m]
        metrics: dict[str, Any] = {"epoch": epoch, MEMBERS: members}
        for name in TOP_LEVEL:  # Ray checks that a searcher's metrics are in every result
            metrics[name] = max((m[name] for m in trained), default=0.0)
        return metrics

    def send(self, metrics: dict[str, Any], checkpoint: bool = True) -> None:
        """Report the result, with a checkpoint of the members as they stand now."""
        epoch = metrics["epoch"]
        if not checkpoint:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            for i, trainer in enumerate(self.trainers):
                save_trial_files(Path(folder) / member_folder(i), trainer)
            write_progress(Path(folder), epoch, dropped=self.dropped, lineage=self.lineage, moved_reports=self.moved_reports)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def stacked_training_trial(params: dict[str, Any], data: TensorDataset) -> None:
    """Train a stack's members as one network; report every epoch with a checkpoint."""
    started_at = time.time()
    trainers = [Trainer(train_config_of(member_params(params, i)), data) for i in range(member_count(params))]
    registered = tune.get_checkpoint()
    point, progress = resume_stack(trainers, trial_checkpoints(registered))
    reporter = StackReporter(trainers, progress, TrialPlace.here(started_at, point))
    live = [i for i in range(len(trainers)) if i not in progress.dropped]

    rungs = MemberStopper(params) if params.get(SCHEDULER) == ASHA else None
    population = rule_of(params)
    if population is not None:  # an exploited member trains on with the λ its checkpoint holds
        for i, lam in progress.lambdas.items():
            set_lambda(trainers[i], lam)

    # Epochs persisted after the checkpoint Ray registered, reported again (see trainable.py),
    # each member's own only (a PBT member's epochs up to its exploit are its donor's);
    # ASHA's rungs get them too (its answers were given when they were first trained).
    for epoch in range(checkpoint_epoch(registered) + 1, point.epoch + 1):
        records = {i: t.history[epoch - 1] for i, t in enumerate(trainers)
                   if len(t.history) >= epoch and epoch > progress.lineage.get(i, 0)}  # fmt: skip
        if rungs is not None:
            rungs.stopped(epoch, records)
        kept = progress.moved_reports if epoch == point.epoch else None  # their own epoch, before the exploit
        reporter.report(epoch, records, checkpoint=epoch == point.epoch, kept=kept)
    if not live or trainers[live[0]].finished:
        if reporter.unreported:
            reporter.report(point.epoch, {})
        return
    stack = StackedTrainer([trainers[i] for i in live])
    epochs = iter(range(point.epoch + 1, stack.config.epochs + 1))

    def on_epoch(outcomes: dict[int, EpochOutcome], trained: StackedTrainer) -> None:
        epoch = next(epochs)
        by_member = {live[k]: o for k, o in outcomes.items()}  # the stack names members by their place among `live`
        if rungs is not None and (stopped := rungs.stopped(epoch, by_member)):
            why = f"{STOPPED} at epoch {epoch}"
            trained.drop([live.index(i) for i in stopped], why)
            reporter.dropped.update({i: why for i in stopped})
        result = reporter.metrics(epoch, by_member)  # each member's own epoch, before PBT moves any
        reporter.moved_reports = {}
        if population is not None and epoch < trained.config.epochs:
            figures = {i: o.val_rob_acc for i, o in by_member.items() if isinstance(o, EpochRecord) and i not in reporter.dropped}
            if moves := exploits(population, epoch, figures, {i: trainers[i].controller.value for i in figures}):
                apply_exploits(trainers, moves)  # the members' states were synced at the epoch's end
                trained.restack()
                reporter.lineage.update({move.member: epoch for move in moves})
                moved = {move.member for move in moves}
                reporter.moved_reports = {m["member"]: m for m in result[MEMBERS] if m["member"] in moved}
        reporter.send(result)  # the checkpoint holds the moved members: a resume goes on from there

    stack.fit(on_epoch)


class MemberStopper:
    """Asks the search's ASHA (`member_rungs.py`) about each member of this stack by its trial id."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.client = RungsClient(params["search"])
        self.stack_id = tune.get_context().get_trial_id()

    def stopped(self, epoch: int, outcomes: dict[int, EpochOutcome]) -> set[int]:
        """The members (by place) that ASHA stops after `epoch`, of those that trained it."""
        figures = {member_id(self.stack_id, i): o.val_rob_acc for i, o in outcomes.items() if isinstance(o, EpochRecord)}
        stopped = self.client.stopped(epoch, figures)
        return {i for i in outcomes if member_id(self.stack_id, i) in stopped}
