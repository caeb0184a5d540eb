"""Robustness = accuracy ∧ stability (paper Sec. 3.1), per example and in aggregate.

For each example, with the same adversarial x̂: *correct* if f(x) = y, *stable* if
f(x̂) = f(x), *robust* if f(x) = y and f(x̂) = y. Robust ⇔ correct ∧ stable holds exactly.

Robust requires f(x) = y as well because x lies in its own ε-ball: an example the model
gets wrong is not robustly classified even when a weak attack happens to land on a
correctly classified x̂ (the rule AutoAttack follows too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ExampleFlags:
    """Boolean flags per evaluated example."""

    correct: torch.Tensor
    stable: torch.Tensor
    robust: torch.Tensor

    @classmethod
    def cat(cls, parts: list[ExampleFlags]) -> ExampleFlags:
        """The flags of several batches as one set, on the CPU (one copy per flag, not per batch)."""
        return cls(*(torch.cat([getattr(p, f) for p in parts]).cpu() for f in ("correct", "stable", "robust")))


def example_flags(pred_nat: torch.Tensor, pred_adv: torch.Tensor, y: torch.Tensor) -> ExampleFlags:
    """Flags from natural and adversarial predictions on the same examples."""
    correct = pred_nat == y
    return ExampleFlags(correct=correct, stable=pred_adv == pred_nat, robust=correct & (pred_adv == y))


@dataclass(frozen=True)
class RobustnessMetrics:
    """The three metrics of every table in the paper, plus the local-Lipschitz estimate."""

    nat_acc: float
    rob_acc: float
    stability: float
    lipschitz: float
    n: int


def summarize(flags: ExampleFlags, grad_l1_max: torch.Tensor) -> RobustnessMetrics:
    """Fractions of correct, robust and stable examples; mean Lipschitz estimate."""
    n = int(flags.correct.numel())
    if n == 0:
        raise ValueError("no examples to summarise")
    return RobustnessMetrics(
        nat_acc=flags.correct.float().mean().item(),
        rob_acc=flags.robust.float().mean().item(),
        stability=flags.stable.float().mean().item(),
        lipschitz=grad_l1_max.float().mean().item(),
        n=n,
    )


@dataclass(frozen=True, eq=False)  # its flags are tensors: compare `metrics` and each flag
class TestResult:
    """A run's one reading of the test split: its figures and each example's flags (for paired
    comparisons of two runs on the same test images)."""

    metrics: RobustnessMetrics
    flags: ExampleFlags
