"""The evaluation attack suite: robust accuracy and stability under several attacks.

The paper reports PGD-20 (Table 1), C&W∞, FAB and Square (Table 2) and AutoAttack
(Table 4). PGD-20 is the per-epoch evaluation's attack itself (`TrainingSettings.eval_pgd`:
the same ε, step and steps, the same random starts for the same seed), so `wartune
evaluate` and the training history report the same number. C&W∞ is that PGD on the
Carlini-Wagner margin (the L∞ form TRADES' evaluation uses). FAB, Square, APGD-CE and
AutoAttack come from torchattacks (AutoAttack assembled from its four parts with the reference
budget, `standard_autoattack`: torchattacks' own class runs 10 iterations). Every attack
searches the PGDConfig's ball (L∞, or L2 with AutoAttack's L2 version), and every example's
flags (correct, stable, robust) come from the same x̂, so robust ⇔ correct ∧ stable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from wartune.engine.attacks import NORM_LABEL, AttackLoss, PGDConfig, pgd_linf
from wartune.engine.batches import eval_batches
from wartune.engine.data import TensorDataset
from wartune.engine.evaluation import EVAL_BATCH, flags_under_attack
from wartune.engine.metrics import ExampleFlags, summarize
from wartune.errors import ConfigError

# (model, x, y, the evaluation PGD, the attack's generator) -> x̂
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, PGDConfig, torch.Generator], torch.Tensor]


def _pgd(loss: AttackLoss) -> AttackFn:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pgd: PGDConfig, generator: torch.Generator) -> torch.Tensor:
        return pgd_linf(model, x, y, replace(pgd, loss=loss), generator).x_adv

    return run


def _torchattacks(name: str) -> AttackFn:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pgd: PGDConfig, generator: torch.Generator) -> torch.Tensor:
        import torchattacks

        eps, norm = pgd.eps, TORCHATTACKS_NORM[pgd.norm]
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        n_classes = int(model(x[:1]).shape[1])
        if name == "fab":
            attack = torchattacks.FAB(model, norm=norm, eps=eps, steps=20, n_classes=n_classes, seed=seed)
        elif name == "square":
            attack = torchattacks.Square(model, norm=norm, eps=eps, n_queries=1000, seed=seed)
        elif name == "apgd-ce":
            attack = torchattacks.APGD(model, norm=norm, eps=eps, steps=50, loss="ce", seed=seed)
        else:
            attack = standard_autoattack(model, eps, n_classes, seed, norm)
        return attack(x, y).detach()

    return run


# AutoAttack's standard version (Croce & Hein 2020; fra31/auto-attack `set_version("standard")`),
# as RobustBench runs it: APGD-CE, APGD-T and FAB-T at 100 iterations, 9 target classes each
# (APGD-T, FAB-T), 1 restart, then Square with 5000 queries and its unrescaled p schedule.
AUTOATTACK_ITERATIONS, AUTOATTACK_TARGETS, SQUARE_QUERIES = 100, 9, 5000


TORCHATTACKS_NORM = {"linf": "Linf", "l2": "L2"}


def standard_autoattack(model: nn.Module, eps: float, n_classes: int, seed: int, norm: str = "Linf") -> Any:
    """Standard AutoAttack (L∞, or its L2 version) from torchattacks' parts, each run on the examples the ones before left robust.

    torchattacks 3.3.0's `AutoAttack(version="standard")` leaves its parts at their 10-iteration
    defaults (and 99 targets on 100 classes): weaker and cheaper than the published standard.
    Its `MultiAttack` runs the parts in order as the reference does, so only the settings are ours.
    """
    import torchattacks

    targets = min(AUTOATTACK_TARGETS, n_classes - 1)
    steps = AUTOATTACK_ITERATIONS
    apgd_t = torchattacks.APGDT(model, norm=norm, eps=eps, steps=steps, n_restarts=1, n_classes=n_classes, seed=seed)
    fab_t = torchattacks.FAB(model, norm=norm, eps=eps, steps=steps, n_restarts=1, multi_targeted=True, n_classes=n_classes, seed=seed)
    apgd_t.n_target_classes = fab_t.n_target_classes = targets
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, norm=norm, eps=eps, steps=steps, n_restarts=1, loss="ce", seed=seed),
        apgd_t,
        fab_t,
        torchattacks.Square(model, norm=norm, eps=eps, n_queries=SQUARE_QUERIES, n_restarts=1, resc_schedule=False, seed=seed),
    ])  # fmt: skip


def attack_budget(name: str, pgd: PGDConfig) -> str:
    """What `name` spends on each example under `pgd`'s ε (steps, step size, queries, restarts):
    printed beside its figure and stored with it, so a reader can weigh the number."""
    steps = f"{pgd.steps} steps of {pgd.step_size:g}, a random start"
    budgets = {
        "pgd20": f"PGD on cross-entropy, {steps}",
        "cw": f"PGD on the C&W margin, {steps}",
        "apgd-ce": "APGD-CE, 50 steps, 1 restart",
        "fab": "FAB (untargeted), 20 steps, 1 restart",
        "square": "Square, 1,000 queries, 1 restart",
        "autoattack": f"standard AutoAttack: APGD-CE, APGD-T and FAB-T ({AUTOATTACK_TARGETS} targets) at "
        f"{AUTOATTACK_ITERATIONS} steps, Square at {SQUARE_QUERIES:,} queries, 1 restart each",
    }
    return f"{NORM_LABEL[pgd.norm]} ε {pgd.eps:.4g}: {budgets[name]}"


ATTACKS: dict[str, AttackFn] = {
    "pgd20": _pgd("ce"),
    "cw": _pgd("cw"),
    "apgd-ce": _torchattacks("apgd-ce"),
    "fab": _torchattacks("fab"),
    "square": _torchattacks("square"),
    "autoattack": _torchattacks("autoattack"),
}


@dataclass(frozen=True)
class AttackResult:
    """One attack's three metrics on the evaluated examples."""

    attack: str
    nat_acc: float
    rob_acc: float
    stability: float
    n: int
    eps: float
    seconds: float = 0.0  # the attack's wall time on these examples
    budget: str = ""  # what it spent per example (`attack_budget`)


# Told of each attack as the suite runs: (its place from 1, its name, None as it starts or its
# result once done), so a command can say what runs and how long each took.
AttackProgress = Callable[[int, str, "AttackResult | None"], None]


def distance(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Each example's perturbation size in the threat model's norm."""
    flat = delta.flatten(1)
    return flat.norm(dim=1) if norm == "l2" else flat.abs().amax(dim=1)


def check_attacks(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise ConfigError(f"unknown attack(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(ATTACKS)}")


def evaluate_attacks(
    model: nn.Module, data: TensorDataset, pgd: PGDConfig, attacks: list[str], max_examples: int | None = None,
    batch_size: int = EVAL_BATCH, seed: int = 0, on_attack: AttackProgress | None = None,
) -> list[AttackResult]:  # fmt: skip
    """Natural and robust accuracy and stability of `model` on the test split under each attack.

    `pgd` is the model's evaluation PGD (`TrainConfig.eval_pgd(eps)`); its ε bounds every
    attack. Each attack draws from its own generator seeded by `seed`, so pgd20 with
    `evaluation.eval_seed(seed, epoch)` repeats that epoch's evaluation exactly. `on_attack`
    hears of each attack as it starts and ends (AutoAttack alone runs for minutes).
    """
    check_attacks(attacks)
    model.eval()
    device = next(model.parameters()).device
    results = []
    for place, name in enumerate(attacks, 1):
        if on_attack is not None:
            on_attack(place, name, None)
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(seed)
        parts: list[ExampleFlags] = []
        for x, y in eval_batches(data, max_examples, batch_size, device):
            x_adv = ATTACKS[name](model, x, y, pgd, generator)
            if distance(x_adv - x, pgd.norm).max().item() > pgd.eps * (1 + 1e-4) + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
                raise RuntimeError(f"attack {name} left the ε-ball or [0, 1]")
            parts.append(flags_under_attack(model, x, x_adv, y))
        flags = ExampleFlags.cat(parts)
        m = summarize(flags, torch.zeros(flags.correct.numel()))
        seconds = time.perf_counter() - started
        results.append(AttackResult(name, m.nat_acc, m.rob_acc, m.stability, m.n, pgd.eps, seconds, attack_budget(name, pgd)))
        if on_attack is not None:
            on_attack(place, name, results[-1])
    return results
