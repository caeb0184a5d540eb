"""The evaluation attack suite: robust accuracy and stability under several attacks.

The paper reports PGD-20 (Table 1), C&W∞, FAB and Square (Table 2) and AutoAttack
(Table 4). PGD-20 and C&W∞ (PGD-20 on the Carlini-Wagner margin, the L∞ form TRADES'
evaluation uses) are wartune's own; FAB, Square, APGD-CE and AutoAttack come from
torchattacks. Every attack is L∞ with the model's training ε, and every example's
flags (correct, stable, robust) come from the same x̂, so robust ⇔ correct ∧ stable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from wartune.engine.attacks import PGDConfig, pgd_linf
from wartune.engine.data import TensorDataset, to_float
from wartune.engine.metrics import ExampleFlags, example_flags, summarize
from wartune.errors import ConfigError

AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, float, int], torch.Tensor]


def _pgd(loss: str) -> AttackFn:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        cfg = PGDConfig(eps=eps, step_size=eps / 4, steps=20, loss=loss, start="uniform")  # type: ignore[arg-type]
        return pgd_linf(model, x, y, cfg, torch.Generator().manual_seed(seed)).x_adv

    return run


def _torchattacks(name: str) -> AttackFn:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int) -> torch.Tensor:
        import torchattacks

        n_classes = int(model(x[:1]).shape[1])
        if name == "fab":
            attack = torchattacks.FAB(model, norm="Linf", eps=eps, steps=20, n_classes=n_classes, seed=seed)
        elif name == "square":
            attack = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=1000, seed=seed)
        elif name == "apgd-ce":
            attack = torchattacks.APGD(model, norm="Linf", eps=eps, steps=50, loss="ce", seed=seed)
        else:
            attack = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=n_classes, seed=seed)
        return attack(x, y).detach()

    return run


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


def check_attacks(names: list[str]) -> None:
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise ConfigError(f"unknown attack(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(ATTACKS)}")


def evaluate_attacks(
    model: nn.Module, data: TensorDataset, eps: float, attacks: list[str], max_examples: int | None = None,
    batch_size: int = 256, seed: int = 0,
) -> list[AttackResult]:  # fmt: skip
    """Natural and robust accuracy and stability of `model` on the test split under each attack."""
    check_attacks(attacks)
    model.eval()
    device = next(model.parameters()).device
    n = min(len(data.test_y), max_examples or len(data.test_y))
    results = []
    for name in attacks:
        parts: list[ExampleFlags] = []
        for start in range(0, n, batch_size):
            x = to_float(data.test_x[start : min(start + batch_size, n)]).to(device)
            y = data.test_y[start : min(start + batch_size, n)].to(device)
            x_adv = ATTACKS[name](model, x, y, eps, seed + start)
            if (x_adv - x).abs().max().item() > eps + 1e-5 or x_adv.min() < 0 or x_adv.max() > 1:
                raise RuntimeError(f"attack {name} left the ε-ball or [0, 1]")
            with torch.no_grad():
                parts.append(example_flags(model(x).argmax(1), model(x_adv).argmax(1), y))
        flags = ExampleFlags(*(torch.cat([getattr(p, f) for p in parts]).cpu() for f in ("correct", "stable", "robust")))
        m = summarize(flags, torch.zeros(n))
        results.append(AttackResult(name, m.nat_acc, m.rob_acc, m.stability, m.n, eps))
    return results
