"""WAR's update rules in plain Python: the references the tensor controllers are tested against.

`war_step` is Algorithm 1 of Wu et al. (2021) as written: every step,
λ_t = max(λ_{t−1} + α·(ζ − l_nat / l_rob), 0). `war_ema_step` is the same update on running
averages of both losses. `war_rule_step` is the general rule behind every `war:` setting
(`lambdas.WAR` computes it with tensors); with its defaults it is `war_step` exactly.

Why the variants exist (docs/war-study.md has the traces): on a short schedule the step
ratio answers λ within a step or two, so Algorithm 1's integral update swings λ_t between
0 and twice its mean; the first steps' ratio (≈ 220 at initialisation, l_rob still tiny)
wipes out any λ_0; and ζ itself is a ratio of epoch means. So a rule may measure the ratio
over a window of steps (`ratio: window`, like with like), spread α over an epoch
(`alpha_per: epoch`), hold λ_0 until the ratio first reaches ζ (`hold`), and bound each
step's change (`max_step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

RatioMode = Literal["step", "ema", "window"]
MIN_L_ROB = 1e-6  # below this the ratio is undefined: the clipped Madry term is often exactly 0


def ratio_defined(l_nat: float, l_rob: float, min_l_rob: float) -> bool:
    """Whether l_nat / l_rob is a usable number (both finite, l_rob not vanishing)."""
    return math.isfinite(l_nat) and math.isfinite(l_rob) and l_rob >= min_l_rob


def war_step(
    lambda_prev: float, l_nat: float, l_rob: float, zeta: float, alpha: float, min_l_rob: float
) -> float:
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
    state: WarState,
    l_nat: float,
    l_rob: float,
    zeta: float,
    alpha: float,
    beta: float,
    min_l_rob: float,
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
    return WarState(
        war_step(state.lambda_t, m_nat, m_rob, zeta, alpha, min_l_rob=0.0), m_nat, m_rob
    )


@dataclass(frozen=True)
class WarRule:
    """One WAR update rule, in the controller's own units (α per step, the window in steps).

    Defaults are Algorithm 1. `alpha` is the per-step α: `alpha_per: epoch` arrives here as
    α / steps per epoch. `max_step` bounds |λ_t − λ_{t−1}| (None: unbounded).
    """

    zeta: float
    alpha: float = 0.1
    ratio: RatioMode = "step"
    ema_beta: float = 0.9
    window: int = 1
    hold: bool = False
    max_step: float | None = None
    min_l_rob: float = MIN_L_ROB

    def __post_init__(self) -> None:
        if not (math.isfinite(self.zeta) and self.zeta > 0):
            raise ValueError(f"ζ must be a finite number > 0, got {self.zeta}")
        if not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"α must be a finite number > 0, got {self.alpha}")
        if self.ratio not in ("step", "ema", "window"):
            raise ValueError(f"ratio must be 'step', 'ema' or 'window', got {self.ratio!r}")
        if not 0 <= self.ema_beta < 1:
            raise ValueError(f"ema_beta must be in [0, 1), got {self.ema_beta}")
        if not (isinstance(self.window, int) and self.window >= 1):
            raise ValueError(f"window must be a whole number of steps >= 1, got {self.window!r}")
        if self.max_step is not None and not (math.isfinite(self.max_step) and self.max_step > 0):
            raise ValueError(f"max_step must be a finite number > 0, got {self.max_step}")
        if not self.min_l_rob > 0:
            raise ValueError(f"min_l_rob must be > 0, got {self.min_l_rob}")


class WarRuleState(NamedTuple):
    """What the general rule carries between steps: λ, whether λ_0 is still held, and the
    ratio's memory (both running averages, or the last `window` used steps' losses, oldest first)."""

    lambda_t: float
    holding: bool = False
    m_nat: float = 0.0
    m_rob: float = 0.0
    window_nat: tuple[float, ...] = ()
    window_rob: tuple[float, ...] = ()


def war_rule_step(state: WarRuleState, l_nat: float, l_rob: float, rule: WarRule) -> WarRuleState:
    """One step of the general WAR rule: measure the ratio, then hold λ or move it towards ζ.

    1. A step whose own ratio is undefined (`ratio_defined`) is skipped whole: nothing changes.
    2. The ratio: the step's own l_nat / l_rob (`step`, the paper's); that of the running
       averages (`ema`, as `war_ema_step`); or that of the sums, so the means, of both losses
       over the last `window` used steps (`window`; exactly rounded sums, `math.fsum`).
    3. While `holding`, λ stays at λ_0 until the first step whose ratio is at or below ζ;
       from that step on (it included) λ moves: Δ = α·(ζ − ratio), clipped to ±`max_step`,
       λ_t = max(λ_{t−1} + Δ, 0).
    """
    if not ratio_defined(l_nat, l_rob, rule.min_l_rob):
        return state
    m_nat, m_rob = state.m_nat, state.m_rob
    window_nat, window_rob = state.window_nat, state.window_rob
    if rule.ratio == "ema":
        m_nat = rule.ema_beta * m_nat + (1 - rule.ema_beta) * l_nat
        m_rob = rule.ema_beta * m_rob + (1 - rule.ema_beta) * l_rob
        ratio = m_nat / m_rob
    elif rule.ratio == "window":
        window_nat = (*window_nat, l_nat)[-rule.window :]
        window_rob = (*window_rob, l_rob)[-rule.window :]
        ratio = math.fsum(window_nat) / math.fsum(window_rob)
    else:
        ratio = l_nat / l_rob
    holding = state.holding and not ratio <= rule.zeta
    lambda_t = state.lambda_t
    if not holding:
        delta = rule.alpha * (rule.zeta - ratio)
        if rule.max_step is not None:
            delta = min(max(delta, -rule.max_step), rule.max_step)
        lambda_t = max(lambda_t + delta, 0.0)
    return WarRuleState(lambda_t, holding, m_nat, m_rob, window_nat, window_rob)
