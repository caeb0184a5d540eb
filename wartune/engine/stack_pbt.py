"""Population Based Training inside a stack: the population's exploits move weights from member
to member in memory, with no checkpoint to write or read.

The rule is Ray's synchronous PBT (`ray.tune.schedulers.PopulationBasedTraining`, as a lone
PBT search runs it, `tune/pbt.py`): every `interval` epochs the members are ranked by the
epoch's validation robust accuracy; each of the bottom `quantile` (at least one, at most half)
takes a random top member's whole state (weights, BN statistics, momentum, schedule, random
generator and history, as a restore from its checkpoint would) and its λ, explored: a fresh
draw from the range with probability `resample`, else × 0.8 or × 1.2, clipped to the range.
The draws come from a generator seeded by the search's seed and the epoch, so a resumed stack
makes the same moves. Fixed λ only: PBT explores λ itself.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wartune.engine.config import FixedLambda

if TYPE_CHECKING:
    from wartune.engine.trainer import Trainer

PERTURBATIONS = (0.8, 1.2)  # Ray's PBT's factors for a continuous hyperparameter


@dataclass(frozen=True)
class PbtRule:
    """The population's settings (the space's `pbt:` block and λ range) and the search's seed."""

    interval: int
    quantile: float
    resample: float
    low: float
    high: float
    log: bool
    seed: int

    def draw(self, rng: random.Random) -> float:
        """A fresh λ from the range (log-uniform with `log`)."""
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class Exploit:
    """Member `member` continues from member `donor`'s state with λ `lam`."""

    member: int
    donor: int
    lam: float


def exploits(rule: PbtRule, epoch: int, figures: dict[int, float], lambdas: dict[int, float]) -> list[Exploit]:
    """The moves after `epoch` of the members (by place) with these validation robust accuracies."""
    if epoch % rule.interval or len(figures) < 2:
        return []
    ranked = sorted(figures, key=lambda i: (figures[i], -i))  # worst first; on a tie the later member is lower
    count = min(math.ceil(len(ranked) * rule.quantile), len(ranked) // 2)
    if count == 0:
        return []
    rng = random.Random(f"{rule.seed}:{epoch}")
    moves = []
    for member in ranked[:count]:
        donor = rng.choice(ranked[-count:])
        lam = rule.draw(rng) if rng.random() < rule.resample else lambdas[donor] * rng.choice(PERTURBATIONS)
        moves.append(Exploit(member, donor, min(max(lam, rule.low), rule.high)))
    return moves


def apply_exploits(trainers: Sequence[Trainer], moves: Sequence[Exploit]) -> None:
    """Each move: the donor's whole state (as it stood before any move) into the member, then its λ."""
    states = {m.donor: copy.deepcopy(trainers[m.donor].state_dict()) for m in moves}
    for move in moves:
        trainer = trainers[move.member]
        trainer.load_state_dict(copy.deepcopy(states[move.donor]))
        set_lambda(trainer, move.lam)


def set_lambda(trainer: Trainer, lam: float) -> None:
    """The member's fixed λ, in its controller and its config (what its model.json records)."""
    trainer.controller.load_state_dict({"value": lam})
    trainer.config = trainer.config.model_copy(update={"lam": FixedLambda(value=lam)})
