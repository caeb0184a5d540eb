"""PBT over a stack (`strategy: pbt` with `stack` ≥ `trials`): the whole population is one stack,
whose members exploit each other in memory (`engine/stack_pbt.py`) instead of through Ray's
scheduler and checkpoints.

The population's initial λ are drawn here, from the space's range with the search's seed (what
Ray's sampler does for a lone PBT search), into one stack's `members`; the rule travels in the
stack's config under `pbt`. Each member's rows carry the λ it trained with each epoch, and its
trial row the λ it ended with, as a lone PBT trial's do (`callbacks.py`).
"""

from __future__ import annotations

import random
from typing import Any

from ray import tune

from wartune.engine.stack_pbt import PbtRule
from wartune.tune.spaces import LambdaRange, SearchSpace
from wartune.tune.stacks import MEMBERS

PBT = "pbt"  # a stack's config key holding its population's rule


def stacked_pbt(space: SearchSpace) -> bool:
    """Whether the search is PBT over one stack."""
    return space.strategy == "pbt" and space.stack > 1


def population_params(params: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """The param space of one stack holding the population, with its rule."""
    assert isinstance(space.lam, LambdaRange)  # guaranteed by SearchSpace validation
    rule = pbt_rule(space)
    rng = random.Random(f"{space.seed}:population")
    members = [{"lam": rule.draw(rng), "seed": space.seed} for _ in range(space.trials or 1)]
    stacked = {key: value for key, value in params.items() if key not in ("lam", "seed")}
    return {**stacked, MEMBERS: tune.grid_search([members]), PBT: rule.__dict__}


def pbt_rule(space: SearchSpace) -> PbtRule:
    assert isinstance(space.lam, LambdaRange)
    return PbtRule(space.pbt.every(space.epochs), space.pbt.quantile, space.pbt.resample,
                   space.lam.low, space.lam.high, space.lam.log, space.seed)  # fmt: skip


def rule_of(params: dict[str, Any]) -> PbtRule | None:
    """The population's rule of a stack's config (None: not a PBT stack)."""
    rule = params.get(PBT)
    return PbtRule(**rule) if isinstance(rule, dict) else None

