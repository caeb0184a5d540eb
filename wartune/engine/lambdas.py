"""λ controllers: who decides the weight of the robust term at each training step.

Every controller has `update(l_nat, l_rob) -> λ_t`, called once per step on the batch's
detached losses *before* the weight update (Algorithm 1's order), and a small state dict
so a resumed run continues exactly.

The losses and λ_t are 0-dim tensors on the trial's device, so a step never waits for the
GPU to read a number back; λ_t is float64, so its arithmetic is exactly that of the plain
Python rules `war_step` and `war_ema_step`, which stay here as the references the tensor
forms are tested against.

A controller's state lives in tensors allocated once and updated in place (`copy_`,
`add_`), never rebound: a CUDA graph of the training step (`engine/graphs.py`) captures
`update` once and replays it, reading and writing those same tensors every step. `update`
returns a fresh tensor holding λ_t, so a step's log never aliases the live state.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple, Protocol

import torch

CPU = torch.device("cpu")
RatioMode = Literal["step", "ema"]


class LambdaController(Protocol):
    """The interface the engine relies on."""

    @property
    def value(self) -> float: ...

    @property
    def skipped_steps(self) -> int: ...

    def update(self, l_nat: torch.Tensor, l_rob: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict[str, float]: ...

    def load_state_dict(self, state: dict[str, float]) -> None: ...


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

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._lambda.fill_(float(state["value"]))


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


class WarState(NamedTuple):
    """What WAR with `ratio: ema` carries from one step to the next: λ and both running averages."""

    lambda_t: float
    m_nat: float = 0.0
    m_rob: float = 0.0


def war_ema_step(
    state: WarState, l_nat: float, l_rob: float, zeta: float, alpha: float, beta: float, min_l_rob: float
) -> WarState:
    """Algorithm 1 on averaged losses: m ← β·m + (1−β)·l for l_nat and l_rob, then
    λ_t = max(λ_{t−1} + α·(ζ − m_nat / m_rob), 0).

    Per-step ratios of small batches are noisy; their averages are not. Both averages start
    at 0, as Adam's moments do: Adam's bias correction 1/(1−β^t) is the same factor for both,
    so it cancels in m_nat / m_rob, and the ratio is that of the bias-corrected averages (the
    first step's is the step's own l_nat / l_rob). A step whose own ratio is undefined
    (`ratio_defined`) is skipped whole: averages and λ unchanged, and it does not count as a
    step of the average. m_rob is then an average of values ≥ min_l_rob, never 0 after the
    first used step, so λ_t stays finite and ≥ 0.
    """
    if not ratio_defined(l_nat, l_rob, min_l_rob):
        return state
    m_nat = beta * state.m_nat + (1 - beta) * l_nat
    m_rob = beta * state.m_rob + (1 - beta) * l_rob
    return WarState(war_step(state.lambda_t, m_nat, m_rob, zeta, alpha, min_l_rob=0.0), m_nat, m_rob)


def _defined_tensor(l_nat: torch.Tensor, l_rob: torch.Tensor, min_l_rob: float) -> torch.Tensor:
    """`ratio_defined` as a boolean tensor."""
    return torch.isfinite(l_nat) & torch.isfinite(l_rob) & (l_rob >= min_l_rob)


def war_step_tensor(
    lambda_prev: torch.Tensor, l_nat: torch.Tensor, l_rob: torch.Tensor, zeta: float, alpha: float, min_l_rob: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`war_step` as tensor ops, without reading anything back: (λ_t, whether the step was skipped).

    The losses are widened to λ's float64 first (exactly), so λ_t equals `war_step`'s.
    """
    l_nat, l_rob = l_nat.to(lambda_prev.dtype), l_rob.to(lambda_prev.dtype)
    defined = _defined_tensor(l_nat, l_rob, min_l_rob)
    ratio = l_nat / torch.where(defined, l_rob, 1.0)
    stepped = (lambda_prev + alpha * (zeta - ratio)).clamp(min=0.0)
    return torch.where(defined, stepped, lambda_prev), ~defined


def war_ema_step_tensor(
    lambda_prev: torch.Tensor,
    m_nat: torch.Tensor,
    m_rob: torch.Tensor,
    l_nat: torch.Tensor,
    l_rob: torch.Tensor,
    zeta: float,
    alpha: float,
    beta: float,
    min_l_rob: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """`war_ema_step` as tensor ops, without reading anything back: (λ_t, m_nat, m_rob, skipped).

    Same operations in the same order as the reference, in float64, so λ_t equals its.
    """
    l_nat, l_rob = l_nat.to(lambda_prev.dtype), l_rob.to(lambda_prev.dtype)
    defined = _defined_tensor(l_nat, l_rob, min_l_rob)
    m_nat = torch.where(defined, beta * m_nat + (1 - beta) * l_nat, m_nat)
    m_rob = torch.where(defined, beta * m_rob + (1 - beta) * l_rob, m_rob)
    stepped, _ = war_step_tensor(lambda_prev, m_nat, m_rob, zeta, alpha, min_l_rob=0.0)
    return torch.where(defined, stepped, lambda_prev), m_nat, m_rob, ~defined


class WAR:
    """Width Adjusted Regularization (Wu et al. 2021, Algorithm 1).

    Drives l_nat / l_rob towards ζ, the ratio measured on a thin net at its best λ: while
    the wide net's ratio is below ζ (the robust term too large for its width), λ grows,
    which pushes l_rob down and the ratio up; above ζ, λ shrinks. `ratio="step"` uses
    each step's losses (the paper); `ratio="ema"` their running averages (`war_ema_step`).
    """

    def __init__(
        self,
        zeta: float,
        alpha: float = 0.1,
        lambda0: float = 0.0,
        ratio: RatioMode = "step",
        ema_beta: float = 0.9,
        min_l_rob: float = 1e-6,
        device: torch.device = CPU,
    ) -> None:
        if not (math.isfinite(zeta) and zeta > 0):
            raise ValueError(f"ζ must be a finite number > 0, got {zeta}")
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"α must be a finite number > 0, got {alpha}")
        if not (math.isfinite(lambda0) and lambda0 >= 0):
            raise ValueError(f"λ0 must be a finite number >= 0, got {lambda0}")
        if ratio not in ("step", "ema"):
            raise ValueError(f"ratio must be 'step' or 'ema', got {ratio!r}")
        if not 0 <= ema_beta < 1:
            raise ValueError(f"ema_beta must be in [0, 1), got {ema_beta}")
        if not min_l_rob > 0:
            raise ValueError(f"min_l_rob must be > 0, got {min_l_rob}")
        self.zeta, self.alpha, self.min_l_rob = float(zeta), float(alpha), float(min_l_rob)
        self.ratio, self.ema_beta = ratio, float(ema_beta)
        self._lambda = _scalar(lambda0, device)
        self._m_nat, self._m_rob = _scalar(0.0, device), _scalar(0.0, device)
        self._skipped = torch.zeros((), dtype=torch.int64, device=device)

    @property
    def value(self) -> float:
        return float(self._lambda)

    @property
    def skipped_steps(self) -> int:
        """Steps whose ratio was undefined (λ left unchanged); reading it waits for the device."""
        return int(self._skipped)

    def update(self, l_nat: torch.Tensor, l_rob: torch.Tensor) -> torch.Tensor:
        if self.ratio == "ema":
            lambda_t, m_nat, m_rob, skipped = war_ema_step_tensor(
                self._lambda, self._m_nat, self._m_rob, l_nat, l_rob, self.zeta, self.alpha, self.ema_beta, self.min_l_rob
            )
            self._m_nat.copy_(m_nat)
            self._m_rob.copy_(m_rob)
        else:
            lambda_t, skipped = war_step_tensor(self._lambda, l_nat, l_rob, self.zeta, self.alpha, self.min_l_rob)
        self._lambda.copy_(lambda_t)
        self._skipped.add_(skipped)
        return lambda_t

    def state_dict(self) -> dict[str, float]:
        """λ, the skip count and the averages (0 with `ratio="step"`): float64 values read back exactly."""
        return {
            "value": self.value,
            "skipped_steps": float(self.skipped_steps),
            "m_nat": float(self._m_nat),
            "m_rob": float(self._m_rob),
        }

    def load_state_dict(self, state: dict[str, float]) -> None:
        self._lambda.fill_(float(state["value"]))
        self._skipped.fill_(int(state.get("skipped_steps", 0)))
        self._m_nat.fill_(float(state.get("m_nat", 0.0)))
        self._m_rob.fill_(float(state.get("m_rob", 0.0)))
