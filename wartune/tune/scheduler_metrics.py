"""The metric a restored scheduler ranks trials by, under this release's name.

A search begun by wartune 0.2.0 or before pickled its ASHA or PBT scheduler ranking trials by
`rob_acc`, each epoch's robust accuracy; since table schema 4 every epoch reports it as
`val_rob_acc` (it is measured on the validation split, or on the test split for those legacy
trials). A scheduler unpickled with the old name would refuse every result (Ray checks that a
result holds the scheduler's metric), so `ray_pickles.mend` swaps Ray's classes for these,
which take the current name as they are unpickled.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler

RENAMED_METRICS = {"rob_acc": "val_rob_acc"}  # 0.2.0's epoch metric -> this release's


class CurrentMetricName:
    """Mixin: on unpickling, a scheduler's `_metric` takes its current name (`RENAMED_METRICS`)."""

    _metric: str | None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._metric = RENAMED_METRICS.get(self._metric or "", self._metric)


class ResumableASHA(CurrentMetricName, AsyncHyperBandScheduler):
    """Ray's ASHA, restored under the metric's current name."""
