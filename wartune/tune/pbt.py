"""Population Based Training over λ and the `search:` dimensions (strategy pbt, and compare's
pbt rows), resumable.

Ray's PBT ranks the population by each epoch's robust accuracy; an exploited trial restarts
from the donor's newest checkpoint with the new λ (and lr, weight decay, ε or attack steps
where the space searches them) in its config, which the trainable trains with (a fixed λ,
the lr and the weight decay are the config's, never the checkpoint's: `engine/state.py`).
Ray's perturbation (× 0.8 / × 1.2) is not bounded, so the explored values are clipped back
into their ranges.

Ray does not keep the scheduler's state in the experiment, so a restored synchronous PBT
starts again with its next sync at the first interval, while the restored trials report
epochs past it, and not all the same one when the driver died mid-sync. Ray then syncs the
population at once: a trial that was ahead may be sent back to a donor's earlier checkpoint,
training again epochs that were recorded; and when all stand at one epoch, Ray sets its next
sync to that very epoch, so no paused trial is behind it and none is ever run again (0.1.0
hung). `ResumablePBT` keeps the next sync at or past the furthest epoch any trial reported,
and lets a trial behind it train on to it first. `ray_pickles.mend` puts it in place of
Ray's class in a search that wartune 0.1.0 started.

Nor is Ray's snapshot of the trials current: an exploit changes a trial's λ and checkpoint
in the driver's memory, and the exploited trial trains on with them before Ray next writes
its experiment state. A driver killed in between restores the trial with its old λ and
checkpoint, and its next epochs would be recorded (and trained) with a λ they never had. So
each exploit is written to the search folder (`pbt_exploits.jsonl`) before the trial trains
again, and a restored trial whose λ or tuned values are not its latest exploit's gets them
and the donor's checkpoint back (`on_trial_add`); the trainable then continues from the
newest checkpoint of the trial's own (`resume.py`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

from ray import tune
from ray.train._internal.checkpoint_manager import _TrainingResult
from ray.tune.experiment import Trial
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pbt import _make_experiment_tag

from wartune.tune.dimensions import TUNED, mutations, within_ranges
from wartune.tune.running import current
from wartune.tune.scheduler_metrics import CurrentMetricName
from wartune.tune.spaces import LambdaRange, SearchSpace

EXPLOITS_FILE = "pbt_exploits.jsonl"  # one line per exploit: the trial, its new λ and tuned values, the donor's checkpoint


def record_exploit(folder: Path, exploit: dict[str, Any]) -> None:
    """Append one exploit to the search's journal, on disk before the trial trains again."""
    with open(folder / EXPLOITS_FILE, "a", encoding="utf-8") as journal:
        journal.write(json.dumps(exploit) + "\n")
        journal.flush()
        os.fsync(journal.fileno())


def latest_exploits(folder: Path) -> dict[str, dict[str, Any]]:
    """Each exploited trial's latest exploit (a line cut short by a kill is skipped)."""
    latest: dict[str, dict[str, Any]] = {}
    try:
        lines = (folder / EXPLOITS_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return latest
    for line in lines:
        try:
            exploit = json.loads(line)
        except json.JSONDecodeError:
            continue
        latest[exploit["trial"]] = exploit
    return latest


def _scalars(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if isinstance(v, int | float | str | bool)}


class ResumablePBT(CurrentMetricName, PopulationBasedTraining):
    """Ray's PBT, whose synchronous population meets again after a restore (module docstring),
    ranking by the metric's current name (`scheduler_metrics.py`), and leaving a trial's last
    epoch alone: Ray would exploit there too, handing a finished trial a donor's checkpoint and
    values it never trains with (its config and the journal would then name them).

    A trial at its last epoch leaves the population. Nobody waits at a sync for it, nobody
    takes its checkpoint (from an epoch the others have not reached), its epoch does not move
    the next sync, and a sync that only waited for it happens at once. After a restore the
    population may stand an epoch apart: a trial that finished while another waited at its
    sync left that one PAUSED and never chosen again (0.3.0 hung there).
    """

    def __init__(self, *args: Any, last_epoch: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_epoch = last_epoch

    def _at_last_epoch(self, time: Any) -> bool:
        last = getattr(self, "last_epoch", None)  # None in a scheduler that wartune 0.1.0 pickled
        return last is not None and isinstance(time, int | float) and time >= last

    def _finished(self, trial: Any) -> bool:
        return self._at_last_epoch(self._trial_state[trial].last_train_time)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        time = result.get(self._time_attr)
        if self._at_last_epoch(time):
            self._trial_state[trial].last_train_time = time
            self._sync_the_waiting(tune_controller)
            return TrialScheduler.CONTINUE
        if self._synch and isinstance(time, int | float):
            self._next_perturbation_sync = max(self._next_perturbation_sync, time)
            if time < self._next_perturbation_sync:  # behind the population: train on to it
                return TrialScheduler.CONTINUE
        return self._ray_rule(tune_controller, trial, result)

    def _ray_rule(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Ray's decision, with the next sync set by the trials still in the population."""
        sync = self._next_perturbation_sync
        decision = super().on_trial_result(tune_controller, trial, result)
        if self._synch and self._next_perturbation_sync != sync:  # the population synced
            times = [s.last_train_time for t, s in self._trial_state.items() if not self._finished(t)]
            self._next_perturbation_sync = max([sync + self._perturbation_interval, *times])
        return decision

    def _sync_the_waiting(self, tune_controller: Any) -> None:
        """The sync a finished trial held back: due once every other live trial waits at it."""
        if not self._synch:
            return
        live = [t for t in tune_controller.get_live_trials() if not self._finished(t)]
        waiting = [t for t in live if t.status == Trial.PAUSED and self._trial_state[t].last_result is not None
                   and self._trial_state[t].last_train_time >= self._next_perturbation_sync]  # fmt: skip
        if waiting and len(waiting) == len(live):
            self._ray_rule(tune_controller, waiting[0], self._trial_state[waiting[0]].last_result)

    def _quantiles(self) -> tuple[list[Any], list[Any]]:
        """Ray's quantiles, over the trials still in the population (Ray's rule reads
        `_trial_state`, so it is handed theirs for the call)."""
        states = self._trial_state
        self._trial_state = {t: s for t, s in states.items() if not self._finished(t)}
        try:
            return super()._quantiles()
        finally:
            self._trial_state = states

    def _exploit(self, tune_controller: Any, trial: Any, trial_to_clone: Any) -> None:
        super()._exploit(tune_controller, trial, trial_to_clone)
        checkpoint = trial.run_metadata.checkpoint_manager.latest_checkpoint_result.checkpoint
        path = PurePosixPath(checkpoint.path)
        experiment = PurePosixPath(trial.storage.experiment_fs_path)
        record_exploit(current().folder, {
            "trial": trial.trial_id, "donor": trial_to_clone.trial_id, "lam": trial.config["lam"],
            TUNED: trial.config.get(TUNED),
            "epoch": self._trial_state[trial_to_clone].last_train_time,
            "checkpoint": str(path.relative_to(experiment)) if path.is_relative_to(experiment) else str(path),
            "metrics": _scalars(self._trial_state[trial_to_clone].last_result or {}),
        })  # fmt: skip

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """A restored trial gets its latest exploit back where Ray's snapshot predates it."""
        super().on_trial_add(tune_controller, trial)
        exploit = latest_exploits(current().folder).get(trial.trial_id)
        if exploit is None or _exploited_values(trial.config) == _exploited_values(exploit):
            return
        config = {**trial.config, **_exploited_values(exploit)}
        trial.set_experiment_tag(_make_experiment_tag(self._trial_state[trial].orig_tag, config, self._hyperparam_mutations))
        trial.set_config(config)
        path = PurePosixPath(trial.storage.experiment_fs_path) / exploit["checkpoint"]
        donor = tune.Checkpoint(str(path), filesystem=trial.storage.storage_filesystem)
        trial.run_metadata.checkpoint_manager._latest_checkpoint_result = _TrainingResult(
            checkpoint=donor, metrics=exploit["metrics"]
        )


def _exploited_values(values: dict[str, Any]) -> dict[str, Any]:
    """What an exploit sets in a trial's config: λ, and the tuned values where the search has them."""
    return {"lam": values.get("lam")} | ({TUNED: values[TUNED]} if values.get(TUNED) is not None else {})


def lambda_domain(space: SearchSpace) -> Any:
    """λ's range as a Ray domain: what Optuna samples, and PBT draws from and mutates within."""
    assert isinstance(space.lam, LambdaRange)  # guaranteed by SearchSpace validation
    sample = tune.loguniform if space.lam.log else tune.uniform
    return sample(space.lam.low, space.lam.high)


def population_based_training(space: SearchSpace) -> ResumablePBT:
    """PBT over λ and the `search:` dimensions (the `pbt:` block): the population is the search's `trials`."""
    assert isinstance(space.lam, LambdaRange)  # guaranteed by SearchSpace validation
    low, high = space.lam.low, space.lam.high
    moved: dict[str, Any] = {"lam": lambda_domain(space)}
    if space.search:
        moved[TUNED] = mutations(space.search)

    def within_range(config: dict[str, Any]) -> dict[str, Any]:
        config["lam"] = min(max(float(config["lam"]), low), high)
        if space.search:
            config[TUNED] = within_ranges(config[TUNED], space.search)
        return config

    return ResumablePBT(
        time_attr="epoch", metric="val_rob_acc", mode="max", perturbation_interval=space.pbt.every(space.epochs),
        hyperparam_mutations=moved, quantile_fraction=space.pbt.quantile,
        resample_probability=space.pbt.resample, custom_explore_fn=within_range, synch=space.pbt.synch,
        last_epoch=space.epochs,
    )  # fmt: skip
