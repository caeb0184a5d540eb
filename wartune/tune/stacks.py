"""Stacked λ-trials in the tune layer: which trials share a stack, and each member's identity.

With `stack: K` (`--stack K`) the trials of one model that differ only in λ and seed are
grouped into stacks of at most K, and each stack runs as one Ray trial that trains its members
as one grouped network (`engine/stacked_trainer.py`; `stacked_trainable.py`). Everywhere a
user looks each member stays a trial of its own: the driver callback fans a stack's result
out into one result per member (`callbacks.py`), so trials.parquet and epochs.parquet have a
row per member (its `stack` column names the Ray trial that trained it), MLflow a run per
member and models/ a folder per member; each member's cost is its share of the stack's time.

A stack's Ray config is a trial's config whose `lam` and `seed` are replaced by `members`,
the list of each member's {"lam", "seed"}: grid search sweeps `model` and `members` (grid,
fixed, WAR, compare's parts), or Optuna asks for each member (`stacked_search.py`), so the
members of one stack always share their model, schedule and every other setting.
Stacks are balanced (8 trials at K = 6 make two stacks of 4, not 6 and 2): the stacks of a
search run side by side, so the largest one sets the search's time.
"""

from __future__ import annotations

import math
from typing import Any

from ray import tune

MEMBERS = "members"  # the key of a stack's config holding its members' λ and seed
SCHEDULER = "scheduler"  # the key of a stack's config naming who may stop its members (`member_rungs.py`)


def grid_values(value: Any) -> list[Any]:
    """A parameter's values: a grid's list, else the one value."""
    if isinstance(value, dict) and "grid_search" in value:
        return list(value["grid_search"])
    return [value]


def balanced_chunks(items: list[Any], k: int) -> list[list[Any]]:
    """`items` in order, cut into the fewest groups of at most `k`, as equal in size as can be."""
    groups = math.ceil(len(items) / k)
    base, extra = divmod(len(items), groups)
    chunks, start = [], 0
    for g in range(groups):
        size = base + (1 if g < extra else 0)
        chunks.append(items[start : start + size])
        start += size
    return chunks


def largest_chunk(count: int, k: int) -> int:
    """The largest stack `count` trials make at `stack: k` (balanced_chunks')."""
    return len(balanced_chunks(list(range(count)), k)[0]) if count else 0


def stacked_params(params: dict[str, Any], k: int) -> dict[str, Any]:
    """The param space with the λ × seed trials of each model grouped into stacks of at most `k`
    (unchanged for k = 1, or when there is only one such trial)."""
    settings = [{"lam": lam, "seed": seed} for lam in grid_values(params["lam"]) for seed in grid_values(params["seed"])]
    if k <= 1 or len(settings) <= 1:
        return params
    stacked = {key: value for key, value in params.items() if key not in ("lam", "seed")}
    stacked[MEMBERS] = tune.grid_search(balanced_chunks(settings, k))
    return stacked


def is_stack(config: dict[str, Any]) -> bool:
    return MEMBERS in config


def member_count(config: dict[str, Any]) -> int:
    return len(config[MEMBERS]) if is_stack(config) else 1


def member_params(config: dict[str, Any], index: int) -> dict[str, Any]:
    """Member `index`'s config: what its lone trial's would be."""
    member = config[MEMBERS][index]
    return {**{k: v for k, v in config.items() if k != MEMBERS}, "lam": member["lam"], "seed": member["seed"]}


def member_id(stack_id: str, index: int) -> str:
    """A member's trial id: the stack's Ray trial id and its place in the stack (`a1b2c_00000-2`)."""
    return f"{stack_id}-{index}"


def trial_ids(trial_id: str, config: dict[str, Any]) -> list[str]:
    """The trial ids a Ray trial stands for: its members' for a stack, else its own."""
    if not is_stack(config):
        return [trial_id]
    return [member_id(trial_id, i) for i in range(member_count(config))]
