"""The adversarial-training objectives, each `L_nat + λ·R` (the paper's eq. 1.1).

Each returns `l_nat` and `l_rob` separately: the engine combines them with λ_t, and WAR
needs their ratio, so WAR runs with every one of them. Checkable line by line against
PAPER.md's objective table and the defences' papers:

| objective | l_nat        | l_rob                                      | attack ascends |
| trades    | CE(f(x), y)  | KL(softmax f(x) ‖ softmax f(x̂)), batch mean | the KL term    |
| madry     | CE(f(x), y)  | mean_i max(CE(f(x̂_i), y_i) − CE(f(x_i), y_i), 0) | CE(f(x̂), y) |
| mart      | BCE(f(x̂), y) | mean_i KL_i(f(x) ‖ f(x̂)) · (1 − p_y(x_i))   | CE(f(x̂), y) |
| fgsm-rs   | as madry     | as madry                                   | CE, one step   |
| trades-awp | as trades, on weights perturbed each step (`awp.py`) | as trades | the KL term |

The Madry clip is per example, inside the expectation, as in the paper's Appendix D
formula; it is what lets λ > 1 boost the robust part. MART (Wang et al., ICLR 2020) is its
reference code's loss: BCE(f(x̂), y) = CE(f(x̂), y) − log(1 − p_ŷ(x̂)), ŷ the most likely
wrong class, and the per-example KL weighted by how unsure the clean prediction is; λ is its
β (6 in the paper). `fgsm-rs` is "fast" adversarial training (Wong et al., ICLR 2020; the
paper's Table 5): the generalised Madry losses on one FGSM step of 1.25 ε from a uniform
random start, whatever the space's attack settings say. `trades-awp` is TRADES with
adversarial weight perturbation (Wu, Xia and Wang 2020; the paper's Table 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from wartune.engine.attacks import AttackLoss, RandomStart

ObjectiveName = Literal["trades", "madry", "mart", "fgsm-rs", "trades-awp"]
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


MART_EPS = 1e-12  # MART's reference code: inside its logs, so a probability of 0 or 1 stays finite


def mart_losses(logits_nat: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor) -> LossPair:
    """MART (Wang et al. 2020), as its reference code computes it (module docstring)."""
    adv_probs = F.softmax(logits_adv, dim=1)
    top2 = adv_probs.argsort(dim=1)[:, -2:]
    wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])  # the most likely wrong class under attack
    l_nat = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + MART_EPS), wrong)
    nat_probs = F.softmax(logits_nat, dim=1)
    true_probs = nat_probs.gather(1, y[:, None]).squeeze(1)
    kl = (nat_probs * (torch.log(nat_probs + MART_EPS) - torch.log(adv_probs + MART_EPS))).sum(dim=1)
    return l_nat, (kl * (1.0000001 - true_probs)).mean()


@dataclass(frozen=True)
class Objective:
    """A loss pair and the training attack that goes with it in the reference code.

    `attack_steps` and `attack_step_ratio` (step = ratio · ε), when set, fix the training
    attack whatever the space's `attack:` block says (FGSM-RS: one step of 1.25 ε).
    """

    name: ObjectiveName
    losses: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], LossPair]
    attack_loss: AttackLoss
    attack_start: RandomStart
    attack_steps: int | None = None
    attack_step_ratio: float | None = None
    perturbs_weights: bool = False  # AWP: each step trains on adversarially perturbed weights (`awp.py`)


OBJECTIVES: dict[str, Objective] = {
    "trades": Objective("trades", trades_losses, attack_loss="kl", attack_start="gaussian"),
    "madry": Objective("madry", madry_losses, attack_loss="ce", attack_start="uniform"),
    "mart": Objective("mart", mart_losses, attack_loss="ce", attack_start="gaussian"),
    "fgsm-rs": Objective("fgsm-rs", madry_losses, attack_loss="ce", attack_start="uniform", attack_steps=1, attack_step_ratio=1.25),
    "trades-awp": Objective("trades-awp", trades_losses, attack_loss="kl", attack_start="gaussian", perturbs_weights=True),
}


def get_objective(name: str) -> Objective:
    """Look an objective up by name (validated earlier by the config layer)."""
    return OBJECTIVES[name]
