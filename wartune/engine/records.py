"""What a run records: each step's losses and λ_t, each epoch's row, and the final result.

Plain dataclasses of numbers, so a checkpoint stores them as dicts (`asdict`) and loads
them with `torch.load(..., weights_only=True)`. While an epoch runs its steps are kept on
the device (`StepLog`) and read back once, at the epoch's end.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from wartune.engine.config import TrainConfig
from wartune.engine.metrics import RobustnessMetrics


@dataclass
class StepTrace:
    """Per-step losses and λ_t of one epoch (WAR's trace; ζ's spread)."""

    l_nat: list[float] = field(default_factory=list)
    l_rob: list[float] = field(default_factory=list)
    lambda_t: list[float] = field(default_factory=list)

    def append(self, l_nat: float, l_rob: float, lambda_t: float) -> None:
        self.l_nat.append(l_nat)
        self.l_rob.append(l_rob)
        self.lambda_t.append(lambda_t)

    def first_non_finite(self) -> int | None:
        """The index of the first step whose l_nat or l_rob is NaN or infinite (None when all are finite)."""
        for step, (l_nat, l_rob) in enumerate(zip(self.l_nat, self.l_rob, strict=True)):
            if not (math.isfinite(l_nat) and math.isfinite(l_rob)):
                return step
        return None


class StepLog:
    """One epoch's per-step numbers while it runs, as 0-dim device tensors.

    Appending never waits for the device; `to_host` reads everything back in one copy.
    The values are those a per-step `.item()` would give (float32 widens to float64 exactly).
    """

    def __init__(self) -> None:
        self.columns: tuple[list[torch.Tensor], ...] = ([], [], [], [])  # l_nat, l_rob, λ_t, Σ grad ℓ1
        self.examples = 0

    def append(self, l_nat: torch.Tensor, l_rob: torch.Tensor, lambda_t: torch.Tensor, grad_l1: torch.Tensor) -> None:
        """One step: its losses, its λ_t and its examples' input-gradient ℓ1 norms."""
        for column, value in zip(self.columns, (l_nat, l_rob, lambda_t, grad_l1.sum()), strict=True):
            column.append(value.detach())
        self.examples += grad_l1.numel()

    def to_host(self) -> tuple[StepTrace, float]:
        """The epoch's `StepTrace` and mean per-example gradient ℓ1 norm (the train Lipschitz estimate)."""
        l_nat, l_rob, lambda_t, grad_sums = torch.stack(
            [torch.stack(column).double() for column in self.columns]
        ).tolist()
        grad_total = 0.0
        for grad_sum in grad_sums:  # in step order, as the per-step sum always was
            grad_total += grad_sum
        return StepTrace(l_nat, l_rob, lambda_t), grad_total / max(self.examples, 1)


@dataclass
class EpochRecord:
    """One epoch's training statistics and its evaluation on the validation split: one row of
    `epochs.parquet`. The validation figures (`val_*`) choose the best epoch."""

    epoch: int
    val_nat_acc: float
    val_rob_acc: float
    val_stability: float
    val_lipschitz: float
    train_lipschitz: float
    l_nat: float
    l_rob: float
    zeta: float
    zeta_step_std: float
    lambda_mean: float
    lambda_last: float
    lambda_min: float
    lambda_max: float
    lr: float
    wall_seconds: float
    val_examples: int
    war_skipped_steps: int = 0  # WAR steps whose l_nat / l_rob was undefined (λ_t kept); 0 for a fixed λ

    def metrics(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EpochRecord:
        """A record as a checkpoint stored it; one of 0.2.0 names its evaluation's figures
        without `val_` (they were on the test split, as its trial's choices were)."""
        return cls(**{RENAMED_FIGURES.get(k, k): v for k, v in values.items()})


# 0.2.0's names of the per-epoch evaluation's figures, and this release's
RENAMED_FIGURES = {"nat_acc": "val_nat_acc", "rob_acc": "val_rob_acc", "stability": "val_stability",
                   "lipschitz": "val_lipschitz", "eval_examples": "val_examples"}  # fmt: skip


@dataclass
class TrainResult:
    """What `train` returns: the per-epoch history and the trained model."""

    config: TrainConfig
    history: list[EpochRecord]
    model: nn.Module
    best_epoch: int
    step_traces: list[StepTrace]

    @property
    def best(self) -> EpochRecord:
        return self.history[self.best_epoch - 1]

    @property
    def final(self) -> EpochRecord:
        return self.history[-1]


def zeta_of(l_nat_mean: float, l_rob_mean: float) -> float:
    """ζ = (epoch mean of l_nat) / (epoch mean of l_rob); NaN when l_rob's mean is 0."""
    return l_nat_mean / l_rob_mean if l_rob_mean > 0 else math.nan


def epoch_record(
    epoch: int,
    trace: StepTrace,
    train_lipschitz: float,
    metrics: RobustnessMetrics,
    lr: float,
    wall_seconds: float,
    war_skipped_steps: int = 0,
) -> EpochRecord:
    """The epoch's row: its evaluation, its loss means and ζ, the spread of per-step ratios, λ_t's
    range, and how many of its steps WAR skipped."""
    l_nat_mean = float(np.mean(trace.l_nat))
    l_rob_mean = float(np.mean(trace.l_rob))
    ratios = [a / b for a, b in zip(trace.l_nat, trace.l_rob, strict=True) if b > 0]
    return EpochRecord(
        epoch=epoch,
        val_nat_acc=metrics.nat_acc,
        val_rob_acc=metrics.rob_acc,
        val_stability=metrics.stability,
        val_lipschitz=metrics.lipschitz,
        train_lipschitz=train_lipschitz,
        l_nat=l_nat_mean,
        l_rob=l_rob_mean,
        zeta=zeta_of(l_nat_mean, l_rob_mean),
        zeta_step_std=float(np.std(ratios)) if ratios else math.nan,
        lambda_mean=float(np.mean(trace.lambda_t)),
        lambda_last=trace.lambda_t[-1],
        lambda_min=min(trace.lambda_t),
        lambda_max=max(trace.lambda_t),
        lr=lr,
        wall_seconds=wall_seconds,
        val_examples=metrics.n,
        war_skipped_steps=war_skipped_steps,
    )
