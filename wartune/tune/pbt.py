"""Population Based Training over λ (strategy pbt, and compare's pbt rows), resumable.

Ray's PBT ranks the population by each epoch's robust accuracy; an exploited trial restarts
from the donor's newest checkpoint with the new λ in its config, which the trainable trains
with (a fixed λ is the config's, never the checkpoint's). Ray's perturbation (× 0.8 / × 1.2)
is not bounded, so the explored λ is clipped back into the range.

Ray does not keep the scheduler's state in the experiment, so a restored synchronous PBT
starts again with its next sync at the first interval, while the restored trials report
epochs past it, and not all the same one when the driver died mid-sync. Ray then syncs the
population at once: a trial that was ahead may be sent back to a donor's earlier checkpoint,
training again epochs that were recorded; and when all stand at one epoch, Ray sets its next
sync to that very epoch, so no paused trial is behind it and none is ever run again (0.1.0
hung). `ResumablePBT` keeps the next sync at or past the furthest epoch any trial reported,
and lets a trial behind it train on to it first. `ray_pickles.mend` puts it in place of
Ray's class in a search that wartune 0.1.0 started.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler

from wartune.tune.spaces import LambdaRange, SearchSpace


class ResumablePBT(PopulationBasedTraining):
    """Ray's PBT, whose synchronous population meets again after a restore (module docstring)."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        time = result.get(self._time_attr)
        if self._synch and isinstance(time, int | float):
            self._next_perturbation_sync = max(self._next_perturbation_sync, time)
            if time < self._next_perturbation_sync:  # behind the population: train on to it
                return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def lambda_domain(space: SearchSpace) -> Any:
    """λ's range as a Ray domain: what Optuna samples, and PBT draws from and mutates within."""
    assert isinstance(space.lam, LambdaRange)  # guaranteed by SearchSpace validation
    sample = tune.loguniform if space.lam.log else tune.uniform
    return sample(space.lam.low, space.lam.high)


def population_based_training(space: SearchSpace) -> ResumablePBT:
    """PBT over λ (the `pbt:` block): the population is the search's `trials`."""
    assert isinstance(space.lam, LambdaRange)  # guaranteed by SearchSpace validation
    low, high = space.lam.low, space.lam.high

    def within_range(config: dict[str, Any]) -> dict[str, Any]:
        config["lam"] = min(max(float(config["lam"]), low), high)
        return config

    return ResumablePBT(
        time_attr="epoch", metric="rob_acc", mode="max", perturbation_interval=space.pbt.every(space.epochs),
        hyperparam_mutations={"lam": lambda_domain(space)}, quantile_fraction=space.pbt.quantile,
        resample_probability=space.pbt.resample, custom_explore_fn=within_range, synch=space.pbt.synch,
    )  # fmt: skip
