"""Optuna over stacks: each Ray trial is a stack whose members Optuna asks for and is told of
one by one, so the study holds one trial per member (`stacks.py`).

Ray's searchers suggest one config per Ray trial. `StackedSearch` wraps the Optuna searcher:
for a new stack it asks it for each member's λ under the member's own trial id
(`<stack id>-<i>`), and it hands every member's report inside a stack's result to it under
that id, as if the member were a trial of its own: the study's values equal trials.parquet's,
and a member that diverged is told as failed. The budget (`trials`) is cut into balanced
stacks of at most K (`balanced_chunks`), one Ray sample each.

Asking K at once is what any parallel Optuna search does with K trials running: TPE then
proposes K points from the same history, so a stacked study explores in rounds of K.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher

from wartune.tune.stacks import MEMBERS, balanced_chunks, member_id


class StackedSearch(Searcher):
    """`inner` (an Optuna searcher) asked for the members of stacks of the sizes `sizes`, in order."""

    def __init__(self, inner: Searcher, sizes: list[int], seed: int) -> None:
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner, self.sizes, self.seed = inner, list(sizes), seed
        self.stacks: dict[str, int] = {}  # stack id -> its member count
        self.last: dict[str, dict[str, Any]] = {}  # member id -> its latest report

    @classmethod
    def for_budget(cls, inner: Searcher, trials: int, stack: int, seed: int) -> StackedSearch:
        return cls(inner, [len(chunk) for chunk in balanced_chunks(list(range(trials)), stack)], seed)

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self.stacks) >= len(self.sizes):
            return Searcher.FINISHED
        members = []
        for i in range(self.sizes[len(self.stacks)]):
            config = self.inner.suggest(member_id(trial_id, i))
            if not isinstance(config, dict):  # the inner searcher has nothing more
                break
            members.append({"lam": config["lam"], "seed": self.seed})
        if not members:
            return None
        self.stacks[trial_id] = len(members)
        # `lam` is the space's Optuna domain until a trial resolves it; a stack's members hold theirs
        return {"lam": None, MEMBERS: members}

    def _reports(self, trial_id: str, result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """Each member's report in a stack's result, with Ray's own keys (training_iteration…)."""
        shared = {k: v for k, v in result.items() if k != MEMBERS}
        reports = [(member_id(trial_id, own["member"]), {**shared, **own}) for own in result.get(MEMBERS, [])]
        self.last.update(reports)
        return reports

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        for member, report in self._reports(trial_id, result):
            if "error" not in report:
                self.inner.on_trial_result(member, report)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if result is not None:  # the last result, already reported: only remembered
            self._reports(trial_id, result)
        for i in range(self.stacks.get(trial_id, 0)):
            member = member_id(trial_id, i)
            report = self.last.pop(member, None)
            failed = error or report is None or "error" in report
            self.inner.on_trial_complete(member, None if failed else report, error=failed)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__.copy(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))
