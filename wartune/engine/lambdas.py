"""λ controllers: who decides the weight of the robust term at each training step.

Every controller has `update(l_nat, l_rob) -> λ_t`, called once per step on the batch's
detached losses *before* the weight update (Algorithm 1's order), and a small state dict
so a resumed run continues exactly.

The losses and λ_t are 0-dim tensors on the trial's device, so a step never waits for the
GPU to read a number back; λ_t is float64, so its arithmetic is that of the plain Python
rules in `war_rules` (`war_step`, `war_ema_step`, `war_rule_step`), the references the
tensor forms are tested against.

A controller's state lives in tensors allocated once and updated in place (`copy_`,
`add_`, `index_copy_`), never rebound: a CUDA graph of the training step
(`engine/graphs.py`) captures `update` once and replays it, reading and writing those same
tensors every step. Nothing in `update` reads a value back to the host or branches on one;
the only Python branches are on the rule's settings, fixed when the controller is built.
`update` returns a fresh tensor holding λ_t, so a step's log never aliases the live state.
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import torch

from wartune.engine.war_rules import (
    MIN_L_ROB,
    RatioMode,
    WarRule,
    WarRuleState,
    WarState,
    ratio_defined,
    war_ema_step,
    war_rule_step,
    war_step,
)

__all__ = [
    "WAR",
    "Fixed",
    "LambdaController",
    "RatioMode",
    "WarRule",
    "WarRuleState",
    "WarState",
    "ratio_defined",
    "war_ema_step",
    "war_rule_step",
    "war_step",
]

CPU = torch.device("cpu")
ControllerState = dict[str, Any]  # numbers, and the window's losses as lists of floats


class LambdaController(Protocol):
    """The interface the engine relies on."""

    @property
    def value(self) -> float: ...

    @property
    def skipped_steps(self) -> int: ...

    def update(self, l_nat: torch.Tensor, l_rob: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> ControllerState: ...

    def load_state_dict(self, state: ControllerState) -> None: ...


def _scalar(value: float, device: torch.device) -> torch.Tensor:
    """A float64 0-dim tensor: λ's arithmetic in double, as Python's floats do it."""
    return torch.tensor(value, dtype=torch.float64, device=device)


class Fixed:
    """A constant λ: the grid search's and the paper's "no tuning" controller."""

    def __init__(self, value: float, device: torch.device = CPU) -> None:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"λ must be a finite number >= 0, got {value}")
        self._lambda = _scalar(value, device)

    @property
    def value(self) -> float:
        return float(self._lambda)

    @property
    def skipped_steps(self) -> int:
        """A fixed λ never needs the ratio, so it never skips a step."""
        return 0

    def update(self, l_nat: torch.Tensor, l_rob: torch.Tensor) -> torch.Tensor:
        return self._lambda

    def state_dict(self) -> ControllerState:
        return {"value": self.value}

    def load_state_dict(self, state: ControllerState) -> None:
        self._lambda.fill_(float(state["value"]))


def _defined_tensor(l_nat: torch.Tensor, l_rob: torch.Tensor, min_l_rob: float) -> torch.Tensor:
    """`ratio_defined` as a boolean tensor."""
    return torch.isfinite(l_nat) & torch.isfinite(l_rob) & (l_rob >= min_l_rob)


class WAR:
    """Width Adjusted Regularization (Wu et al. 2021, Algorithm 1) and its settling variants.

    Drives l_nat / l_rob towards ζ, the ratio measured on a thin net at its best λ: while
    the wide net's ratio is below ζ (the robust term too large for its width), λ grows,
    which pushes l_rob down and the ratio up; above ζ, λ shrinks. The defaults are
    Algorithm 1 (each step's own ratio, α per step, no hold, no bound); the other settings
    are `war_rules.war_rule_step`'s, which this computes with tensors step for step.

    `alpha` is per step (a per-epoch α arrives divided by the steps of an epoch); `window`
    is the number of used steps `ratio="window"` averages over (a ring buffer of that
    many losses with a device-side position); `hold` keeps λ at `lambda0` until the first
    step whose ratio is at or below ζ (a device-side flag); `max_step` bounds each change.
    """

    def __init__(
        self,
        zeta: float,
        alpha: float = 0.1,
        lambda0: float = 0.0,
        ratio: RatioMode = "step",
        ema_beta: float = 0.9,
        min_l_rob: float = MIN_L_ROB,
        device: torch.device = CPU,
        *,
        window: int = 1,
        hold: bool = False,
        max_step: float | None = None,
    ) -> None:
        if not (math.isfinite(lambda0) and lambda0 >= 0):
            raise ValueError(f"λ0 must be a finite number >= 0, got {lambda0}")
        rule = WarRule(
            zeta, alpha, ratio, ema_beta, window, hold, max_step, min_l_rob
        )  # checks them
        self.zeta, self.alpha, self.min_l_rob = rule.zeta, rule.alpha, rule.min_l_rob
        self.ratio, self.ema_beta, self.window, self.max_step = (
            ratio,
            rule.ema_beta,
            window,
            max_step,
        )
        self.hold = hold
        self._lambda = _scalar(lambda0, device)
        self._skipped = torch.zeros((), dtype=torch.int64, device=device)
        self._holding = torch.tensor(hold, dtype=torch.bool, device=device)
        self._m_nat, self._m_rob = _scalar(0.0, device), _scalar(0.0, device)
        # ratio="window": the last `window` used steps' losses (0 where none yet) and where the next goes
        self._window_nat = torch.zeros(window, dtype=torch.float64, device=device)
        self._window_rob = torch.zeros(window, dtype=torch.float64, device=device)
        self._window_pos = torch.zeros(1, dtype=torch.int64, device=device)

    @classmethod
    def from_rule(cls, rule: WarRule, lambda0: float, device: torch.device = CPU) -> WAR:
        """The controller of one `WarRule` (per-step units), starting from λ_0."""
        return cls(rule.zeta, rule.alpha, lambda0, rule.ratio, rule.ema_beta, rule.min_l_rob, device,
                   window=rule.window, hold=rule.hold, max_step=rule.max_step)  # fmt: skip

    @property
    def rule(self) -> WarRule:
        """The rule this controller computes (`war_rules.war_rule_step` is its plain-Python form)."""
        return WarRule(
            self.zeta,
            self.alpha,
            self.ratio,
            self.ema_beta,
            self.window,
            self.hold,
            self.max_step,
            self.min_l_rob,
        )

    @property
    def value(self) -> float:
        return float(self._lambda)

    @property
    def skipped_steps(self) -> int:
        """Steps whose ratio was undefined (λ left unchanged); reading it waits for the device."""
        return int(self._skipped)

    @property
    def holding(self) -> bool:
        """Whether λ_0 is still held (the ratio has not reached ζ yet); reading it waits for the device."""
        return bool(self._holding)

    def _measured(
        self, l_nat: torch.Tensor, l_rob: torch.Tensor, defined: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(numerator, denominator) of the rule's ratio, its memory updated in place where `defined`."""
        if self.ratio == "step":
            return l_nat, l_rob
        if self.ratio == "ema":
            beta = self.ema_beta
            self._m_nat.copy_(
                torch.where(defined, beta * self._m_nat + (1 - beta) * l_nat, self._m_nat)
            )
            self._m_rob.copy_(
                torch.where(defined, beta * self._m_rob + (1 - beta) * l_rob, self._m_rob)
            )
            return self._m_nat, self._m_rob
        pos = self._window_pos
        for window, loss in ((self._window_nat, l_nat), (self._window_rob, l_rob)):
            kept = torch.where(defined, loss, window.index_select(0, pos).squeeze(0))
            window.index_copy_(0, pos, kept.unsqueeze(0))
        pos.add_(defined.to(pos.dtype)).remainder_(self.window)
        return self._window_nat.sum(), self._window_rob.sum()

    def update(self, l_nat: torch.Tensor, l_rob: torch.Tensor) -> torch.Tensor:
        l_nat, l_rob = l_nat.to(self._lambda.dtype), l_rob.to(self._lambda.dtype)
        defined = _defined_tensor(l_nat, l_rob, self.min_l_rob)
        numerator, denominator = self._measured(l_nat, l_rob, defined)
        ratio = numerator / torch.where(defined, denominator, 1.0)
        holding = self._holding & ~(defined & (ratio <= self.zeta))
        delta = self.alpha * (self.zeta - ratio)
        if self.max_step is not None:
            delta = delta.clamp(-self.max_step, self.max_step)
        stepped = (self._lambda + delta).clamp(min=0.0)
        lambda_t = torch.where(defined & ~holding, stepped, self._lambda)
        self._lambda.copy_(lambda_t)
        self._holding.copy_(holding)
        self._skipped.add_(~defined)
        return lambda_t

    def state_dict(self) -> ControllerState:
        """λ, the skip count, the hold flag and the ratio's memory, read back exactly (float64)."""
        return {
            "value": self.value,
            "skipped_steps": float(self.skipped_steps),
            "holding": float(self.holding),
            "m_nat": float(self._m_nat),
            "m_rob": float(self._m_rob),
            "window_nat": self._window_nat.tolist(),
            "window_rob": self._window_rob.tolist(),
            "window_pos": float(self._window_pos),
        }

    def load_state_dict(self, state: ControllerState) -> None:
        """Fill the live tensors in place; a checkpoint from before a key existed leaves its start value."""
        self._lambda.fill_(float(state["value"]))
        self._skipped.fill_(int(state.get("skipped_steps", 0)))
        self._m_nat.fill_(float(state.get("m_nat", 0.0)))
        self._m_rob.fill_(float(state.get("m_rob", 0.0)))
        if "holding" in state:
            self._holding.fill_(bool(state["holding"]))
        for key, window in (("window_nat", self._window_nat), ("window_rob", self._window_rob)):
            if key in state:
                values = torch.tensor(state[key], dtype=torch.float64)
                if values.shape != window.shape:
                    raise ValueError(
                        f"{key} holds {values.numel()} steps; this controller's window is {window.numel()}"
                    )
                window.copy_(values)
        self._window_pos.fill_(int(state.get("window_pos", 0)))
