"""Population Based Training over λ (strategy pbt, and compare's pbt rows), resumable.

Ray's PBT ranks the population by each epoch's robust accuracy; an exploited trial restarts
from the donor's newest checkpoint with the new λ in its config, which the trainable trains
with (a fixed λ is the config's, never the checkpoint's). Ray's perturbation (× 0.8 / × 1.2)
is not bounded, so the explored λ is clipped back into the range.

Ray does not keep the scheduler's state in the experiment: a restored synchronous PBT starts
again with its next sync at the first interval, while the restored trials report epochs past
it. After they sync there, Ray sets the next sync to the epoch they are all at, so no paused
trial is behind it and none is ever run again: the resumed search hangs. `ResumablePBT`
moves the next sync one interval past such a population. `ray_pickles.mend` puts it
in place of Ray's class in a search that wartune 0.1.0 started.
"""

from __future__ import annotations

from typing import Any

from ray import tune
from ray.tune.schedulers import PopulationBasedTraining

from wartune.tune.spaces import LambdaRange, SearchSpace


class ResumablePBT(PopulationBasedTraining):
    """Ray's PBT, which never leaves every paused trial at or past its next sync."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        decision = super().on_trial_result(tune_controller, trial, result)
        if self._synch:
            times = [
                self._trial_state[t].last_train_time
                for t in tune_controller.get_live_trials()
                if t in self._trial_state
            ]
            if times and min(times) >= self._next_perturbation_sync:
                self._next_perturbation_sync = max(times) + self._perturbation_interval
        return decision


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
