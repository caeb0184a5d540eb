"""The two adversarial-training objectives of the paper, `L_nat + λ·R` (eq. 1.1).

Each returns `l_nat` and `l_rob` separately: the engine combines them with λ_t, and WAR
needs their ratio. Checkable line by line against PAPER.md's objective table:

| objective | l_nat        | l_rob                                      | attack ascends |
| trades    | CE(f(x), y)  | KL(softmax f(x) ‖ softmax f(x̂)), batch mean | the KL term    |
| madry     | CE(f(x), y)  | mean_i max(CE(f(x̂_i), y_i) − CE(f(x_i), y_i), 0) | CE(f(x̂), y) |

The Madry clip is per example, inside the expectation, as in the paper's Appendix D
formula; it is what lets λ > 1 boost the robust part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from wartune.engine.attacks import AttackLoss, RandomStart

ObjectiveName = Literal["trades", "madry"]
LossPair = tuple[torch.Tensor, torch.Tensor]


def trades_losses(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor) -> LossPair:
    """TRADES (Zhang et al. 2019): l_nat = CE, l_rob = KL(f(x) ‖ f(x̂)) averaged over the batch."""
    l_nat = F.cross_entropy(logits_nat, y)
    l_rob = F.kl_div(
        F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction="batchmean"
    )
    return l_nat, l_rob


def madry_losses(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor) -> LossPair:
    """Generalised Madry AT (paper App. D): the CE increase under attack, clipped at 0."""
    ce_nat = F.cross_entropy(logits_nat, y, reduction="none")
    ce_adv = F.cross_entropy(logits_adv, y, reduction="none")
    return ce_nat.mean(), (ce_adv - ce_nat).clamp(min=0.0).mean()


@dataclass(frozen=True)
class Objective:
    """A loss pair and the training attack that goes with it in the reference code."""

    name: ObjectiveName
    losses: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], LossPair]
    attack_loss: AttackLoss
    attack_start: RandomStart


OBJECTIVES: dict[str, Objective] = {
    "trades": Objective("trades", trades_losses, attack_loss="kl", attack_start="gaussian"),
    "madry": Objective("madry", madry_losses, attack_loss="ce", attack_start="uniform"),
}


def get_objective(name: str) -> Objective:
    """Look an objective up by name (validated earlier by the config layer)."""
    return OBJECTIVES[name]
