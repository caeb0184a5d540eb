"""λ controllers: who decides the weight of the robust term at each training step.

Every controller has `update(l_nat, l_rob) -> λ_t`, called once per step on the batch's
detached losses *before* the weight update (Algorithm 1's order), and a small state dict
so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from typing import Protocol


class LambdaController(Protocol):
    """The interface the engine relies on."""

    @property
    def value(self) -> float: ...

    def update(self, l_nat: float, l_rob: float) -> float: ...

    def state_dict(self) -> dict[str, float]: ...

    def load_state_dict(self, state: dict[str, float]) -> None: ...


class Fixed:
    """A constant λ: the grid search's and the paper's "no tuning" controller."""

    def __init__(self, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"λ must be a finite number >= 0, got {value}")
        self._value = float(value)

    @property
    def value(self) -> float:
        return self._value

    def update(self, l_nat: float, l_rob: float) -> float:
        return self._value

    def state_dict(self) -> dict[str, float]:
        return {"value": self._value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._value = float(state["value"])


def ratio_defined(l_nat: float, l_rob: float, min_l_rob: float) -> bool:
    """Whether l_nat / l_rob is a usable number (both finite, l_rob not vanishing)."""
    return math.isfinite(l_nat) and math.isfinite(l_rob) and l_rob >= min_l_rob


def war_step(lambda_prev: float, l_nat: float, l_rob: float, zeta: float, alpha: float, min_l_rob: float) -> float:
    """One step of Algorithm 1: λ_t = max(λ_{t−1} + α·(ζ − l_nat / l_rob), 0).

    When l_rob is below `min_l_rob` (the clipped Madry term often is exactly 0) or either
    loss is not finite, the ratio is undefined and λ is left unchanged (the step is
    skipped), so λ_t is always finite and non-negative.
    """
    if not ratio_defined(l_nat, l_rob, min_l_rob):
        return lambda_prev
    return max(lambda_prev + alpha * (zeta - l_nat / l_rob), 0.0)


class WAR:
    """Width Adjusted Regularization (Wu et al. 2021, Algorithm 1).

    Drives l_nat / l_rob towards ζ, the ratio measured on a thin net at its best λ: while
    the wide net's ratio is above ζ (robust term too small), λ grows.
    """

    def __init__(self, zeta: float, alpha: float = 0.1, lambda0: float = 0.0, min_l_rob: float = 1e-6) -> None:
        if not (math.isfinite(zeta) and zeta > 0):
            raise ValueError(f"ζ must be a finite number > 0, got {zeta}")
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"α must be a finite number > 0, got {alpha}")
        if not (math.isfinite(lambda0) and lambda0 >= 0):
            raise ValueError(f"λ0 must be a finite number >= 0, got {lambda0}")
        self.zeta, self.alpha, self.min_l_rob = float(zeta), float(alpha), float(min_l_rob)
        self._value = float(lambda0)
        self.skipped_steps = 0

    @property
    def value(self) -> float:
        return self._value

    def update(self, l_nat: float, l_rob: float) -> float:
        if not ratio_defined(l_nat, l_rob, self.min_l_rob):
            self.skipped_steps += 1
        self._value = war_step(self._value, l_nat, l_rob, self.zeta, self.alpha, self.min_l_rob)
        return self._value

    def state_dict(self) -> dict[str, float]:
        return {"value": self._value, "skipped_steps": float(self.skipped_steps)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._value = float(state["value"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
