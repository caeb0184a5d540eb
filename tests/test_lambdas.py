"""λ controllers: Fixed, and WAR's update (Algorithm 1 and its variants) against hand-computed sequences.

The controllers take and give 0-dim tensors (the trainer never reads a number back inside
a step); `war_step` is the plain-Python reading of Algorithm 1 they are checked against,
`war_ema_step` that of the `ratio: ema` option, `war_rule_step` that of every `war:` setting
(window, hold, per-epoch α, bounded step).
"""

import math

import pytest
import torch

from wartune.engine.config import WARLambda
from wartune.engine.lambdas import (
    WAR,
    Fixed,
    WarRule,
    WarRuleState,
    WarState,
    ratio_defined,
    war_ema_step,
    war_rule_step,
    war_step,
)
from wartune.engine.trainer import make_controller


def _update(controller, l_nat: float, l_rob: float) -> float:
    """One update on float32 losses, as the trainer's are, read back as a float."""
    return float(controller.update(torch.tensor(l_nat), torch.tensor(l_rob)))


def test_fixed_returns_its_value_whatever_the_losses():
    c = Fixed(6.0)
    assert [_update(c, a, b) for a, b in [(1.0, 0.1), (0.0, 0.0), (5.0, math.nan)]] == [
        6.0,
        6.0,
        6.0,
    ]


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_fixed_refuses_negative_or_non_finite(bad):
    with pytest.raises(ValueError):
        Fixed(bad)


def test_war_update_by_hand():
    # ζ = 30, α = 0.1, λ0 = 0.
    # step 1: l_nat/l_rob = 1.0/0.1 = 10 -> λ = 0 + 0.1·(30 − 10) = 2.0
    # step 2: 0.8/0.02 = 40 -> λ = 2.0 + 0.1·(30 − 40) = 1.0
    # step 3: 0.6/0.01 = 60 -> λ = max(1.0 + 0.1·(30 − 60), 0) = 0.0
    # step 4: 0.5/0.05 = 10 -> λ = 0 + 2.0 = 2.0
    war = WAR(zeta=30.0, alpha=0.1, lambda0=0.0)
    seq = [_update(war, a, b) for a, b in [(1.0, 0.1), (0.8, 0.02), (0.6, 0.01), (0.5, 0.05)]]
    assert seq == pytest.approx([2.0, 1.0, 0.0, 2.0])


def test_war_respects_lambda0_and_alpha():
    war = WAR(zeta=10.0, alpha=0.5, lambda0=3.0)
    assert _update(war, 2.0, 1.0) == pytest.approx(3.0 + 0.5 * (10.0 - 2.0))


@pytest.mark.parametrize(
    "l_nat,l_rob", [(1.0, 0.0), (1.0, 1e-12), (math.nan, 0.1), (1.0, math.inf), (math.inf, 1.0)]
)
def test_war_skips_steps_whose_ratio_is_undefined(l_nat, l_rob):
    war = WAR(zeta=30.0)
    _update(war, 1.0, 0.1)  # λ = 2.0
    assert _update(war, l_nat, l_rob) == pytest.approx(2.0)
    assert war.skipped_steps == 1
    assert math.isfinite(war.value) and war.value >= 0


@pytest.mark.parametrize("ratio", ["step", "ema"])
def test_war_never_negative_or_non_finite_over_a_hostile_sequence(ratio):
    war = WAR(zeta=5.0, alpha=0.1, ratio=ratio)
    pairs = [(1.0, 0.0), (1e9, 1e-5), (0.0, 1.0), (1.0, 1e-30), (1e38, 1e-6), (0.1, 10.0)] * 20
    for a, b in pairs:
        lam = _update(war, a, b)
        assert math.isfinite(lam) and lam >= 0


# Every kind of step: defined ratios above and below ζ, the floor at 0, and each guard
# (l_rob = 0, vanishing, at the threshold, NaN and ±inf in either loss).
HOSTILE = [
    (1.0, 0.1),
    (0.8, 0.02),
    (0.6, 0.01),
    (2.3, 0.0),
    (0.5, 0.05),
    (1.0, 1e-9),
    (0.7, math.nan),
    (math.nan, 0.3),
    (1.1, math.inf),
    (math.inf, 0.2),
    (-math.inf, 0.2),
    (0.9, 1e-6),
    (0.4, 0.013),
    (3.0, 0.0),
    (1e30, 1e-5),
    (0.05, 2.0),
    (1.7, 0.11),
]


@pytest.mark.parametrize("zeta,alpha,lambda0", [(30.0, 0.1, 0.0), (6.0, 0.37, 4.5)])
def test_war_tensor_update_equals_the_reference_rule_step_for_step(zeta, alpha, lambda0):
    war = WAR(zeta=zeta, alpha=alpha, lambda0=lambda0)
    reference, skipped = lambda0, 0
    for l_nat, l_rob in HOSTILE:
        # the losses a step produces are float32: the reference sees their exact float values
        a, b = torch.tensor(l_nat), torch.tensor(l_rob)
        ratio_ok = math.isfinite(float(a)) and math.isfinite(float(b)) and float(b) >= 1e-6
        skipped += not ratio_ok
        reference = war_step(reference, float(a), float(b), zeta, alpha, 1e-6)
        assert float(war.update(a, b)) == reference  # bit for bit, not approximately
        assert war.skipped_steps == skipped
    assert skipped == 9  # 1e-6 as float32 is just below the threshold: skipped too


def test_war_state_round_trip():
    a = WAR(zeta=30.0)
    for pair in [(1.0, 0.1), (1.0, 0.0)]:
        _update(a, *pair)
    b = WAR(zeta=30.0)
    b.load_state_dict(a.state_dict())
    assert (b.value, b.skipped_steps) == (a.value, a.skipped_steps)
    assert (a.value, a.skipped_steps) == (pytest.approx(2.0), 1)


def test_war_step_is_the_pure_rule():
    assert war_step(1.0, 2.0, 0.5, zeta=6.0, alpha=0.1, min_l_rob=1e-6) == pytest.approx(1.2)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"zeta": 0.0}, {"zeta": -1.0}, {"zeta": 30.0, "alpha": 0.0}, {"zeta": 30.0, "lambda0": -1.0},
        {"zeta": 30.0, "ratio": "mean"}, {"zeta": 30.0, "ema_beta": 1.0}, {"zeta": 30.0, "ema_beta": -0.1},
        {"zeta": 30.0, "min_l_rob": 0.0},
    ],
)  # fmt: skip
def test_war_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        WAR(**kwargs)


# ratio: ema. ζ = 10, α = 0.1, β = 0.5, λ0 = 0; averages start at 0 (Adam's bias correction cancels in the ratio).
# step 1: m_nat = 0.5·1.0 = 0.5, m_rob = 0.5·0.5 = 0.25, ratio 2 -> λ = 0 + 0.1·(10 − 2) = 0.8
# step 2: m_nat = 0.25 + 0.5·2.0 = 1.25, m_rob = 0.125 + 0.5·0.25 = 0.25, ratio 5 -> λ = 0.8 + 0.5 = 1.3
#         (the step's own ratio is 8: ratio step would give 1.0)
# step 3: l_rob = 0: skipped, averages and λ unchanged -> 1.3
# step 4: m_nat = 0.625 + 0.5·4.0 = 2.625, m_rob = 0.125 + 0.125 = 0.25, ratio 10.5 -> λ = 1.3 − 0.05 = 1.25
EMA_BY_HAND = [(1.0, 0.5), (2.0, 0.25), (3.0, 0.0), (4.0, 0.25)]


def test_war_ema_update_by_hand_in_the_reference_and_the_controller():
    war = WAR(zeta=10.0, alpha=0.1, ratio="ema", ema_beta=0.5)
    state, reference = WarState(0.0), []
    for l_nat, l_rob in EMA_BY_HAND:
        state = war_ema_step(state, l_nat, l_rob, zeta=10.0, alpha=0.1, beta=0.5, min_l_rob=1e-6)
        reference.append(state.lambda_t)
    assert reference == pytest.approx([0.8, 1.3, 1.3, 1.25])
    assert [_update(war, a, b) for a, b in EMA_BY_HAND] == pytest.approx([0.8, 1.3, 1.3, 1.25])
    assert state == pytest.approx(WarState(1.25, 2.625, 0.25)) and war.skipped_steps == 1


def test_war_ema_skips_whole_steps_before_any_average_exists():
    # the first steps are undefined: nothing is averaged yet, λ stays at λ0
    state = WarState(2.0)
    for l_nat, l_rob in [(1.0, 0.0), (math.nan, 0.1), (1.0, math.inf)]:
        state = war_ema_step(state, l_nat, l_rob, zeta=10.0, alpha=0.1, beta=0.9, min_l_rob=1e-6)
    assert state == WarState(2.0, 0.0, 0.0)
    # then the first used step's ratio is its own l_nat / l_rob: 2.0 + 0.1·(10 − 4) = 2.6
    assert war_ema_step(state, 2.0, 0.5, 10.0, 0.1, 0.9, 1e-6).lambda_t == pytest.approx(2.6)


@pytest.mark.parametrize(
    "zeta,alpha,lambda0,beta", [(30.0, 0.1, 0.0, 0.9), (6.0, 0.37, 4.5, 0.5), (10.0, 0.1, 3.0, 0.0)]
)
def test_war_ema_tensor_update_equals_the_reference_step_for_step(zeta, alpha, lambda0, beta):
    war = WAR(zeta=zeta, alpha=alpha, lambda0=lambda0, ratio="ema", ema_beta=beta)
    state = WarState(lambda0)
    for l_nat, l_rob in [(2.3, 0.0), (math.nan, 0.3), *HOSTILE]:  # starts with undefined steps too
        a, b = torch.tensor(l_nat), torch.tensor(l_rob)
        state = war_ema_step(state, float(a), float(b), zeta, alpha, beta, 1e-6)
        assert (
            float(war.update(a, b)) == state.lambda_t
        )  # bit for bit: same float64 ops in the same order
        assert (war.state_dict()["m_nat"], war.state_dict()["m_rob"]) == (state.m_nat, state.m_rob)
        assert math.isfinite(state.lambda_t) and state.lambda_t >= 0
    assert war.skipped_steps == 11


@pytest.mark.parametrize("ratio", ["step", "ema"])
def test_war_resumed_from_its_state_dict_continues_exactly(ratio):
    first_half, second_half = HOSTILE[:8], HOSTILE[8:]
    straight = WAR(zeta=6.0, alpha=0.37, lambda0=1.0, ratio=ratio, ema_beta=0.8)
    for pair in first_half:
        _update(straight, *pair)
    resumed = WAR(zeta=6.0, alpha=0.37, lambda0=1.0, ratio=ratio, ema_beta=0.8)
    resumed.load_state_dict(straight.state_dict())
    assert resumed.state_dict() == straight.state_dict()
    assert [_update(resumed, *pair) for pair in second_half] == [
        _update(straight, *pair) for pair in second_half
    ]
    assert resumed.state_dict() == straight.state_dict()
    assert (straight.state_dict()["m_rob"] > 0) == (ratio == "ema")


# The settling variants (docs/war-study.md). Each hand-computed sequence differs from what
# Algorithm 1 would do with the same losses, so a variant that fell back to it would fail.

# ratio: window over 2 used steps. ζ = 10, α = 0.1, λ0 = 0.
# step 1: window 1.0 / 0.5 = 2 -> λ = 0.1·8 = 0.8
# step 2: (1 + 2) / (0.5 + 0.25) = 4 -> λ = 0.8 + 0.6 = 1.4   (the step's own ratio 8 would give 1.0)
# step 3: l_rob = 0: skipped, the window keeps its two steps -> 1.4
# step 4: (2 + 4) / (0.25 + 0.25) = 12 -> λ = 1.4 − 0.2 = 1.2  (step 1 left the window)
# step 5: (4 + 1) / (0.25 + 0.75) = 5 -> λ = 1.2 + 0.5 = 1.7
WINDOW_BY_HAND = [(1.0, 0.5), (2.0, 0.25), (3.0, 0.0), (4.0, 0.25), (1.0, 0.75)]

# hold: λ0 = 6 kept until the ratio first reaches ζ = 10; α = 0.1.
# step 1: 2.0 / 0.01 = 200 > ζ: held -> 6      (Algorithm 1: max(6 + 0.1·(10 − 200), 0) = 0)
# step 2: skipped -> 6;  step 3: 15 > ζ: held -> 6
# step 4: 8 <= ζ: released, and this step moves λ -> 6 + 0.2 = 6.2
# step 5: 20 > ζ, no longer held -> 6.2 − 1.0 = 5.2
HOLD_BY_HAND = [(2.0, 0.01), (1.0, 0.0), (1.5, 0.1), (1.0, 0.125), (1.0, 0.05)]

# max_step 0.5: ζ = 10, α = 0.1, λ0 = 3.
# step 1: 1/0.01 = 100 -> Δ = −9, bounded to −0.5 -> 2.5;  step 2: ratio 1 -> Δ 0.9 -> 0.5 -> 3.0
# step 3: ratio 8 -> Δ 0.2 (inside the bound) -> 3.2
BOUND_BY_HAND = [(1.0, 0.01), (1.0, 1.0), (1.0, 0.125)]


@pytest.mark.parametrize(
    "rule,lambda0,pairs,expected",
    [
        (
            WarRule(10.0, 0.1, ratio="window", window=2),
            0.0,
            WINDOW_BY_HAND,
            [0.8, 1.4, 1.4, 1.2, 1.7],
        ),
        (WarRule(10.0, 0.1, hold=True), 6.0, HOLD_BY_HAND, [6.0, 6.0, 6.0, 6.2, 5.2]),
        (WarRule(10.0, 0.1, max_step=0.5), 3.0, BOUND_BY_HAND, [2.5, 3.0, 3.2]),
    ],
    ids=["window", "hold", "max_step"],
)
def test_war_variants_by_hand_in_the_reference_and_the_controller(rule, lambda0, pairs, expected):
    state, reference = WarRuleState(lambda0, holding=rule.hold), []
    for l_nat, l_rob in pairs:
        state = war_rule_step(state, l_nat, l_rob, rule)
        reference.append(state.lambda_t)
    assert reference == pytest.approx(expected)
    war = WAR.from_rule(rule, lambda0)
    assert [_update(war, a, b) for a, b in pairs] == pytest.approx(expected)


def test_hold_stays_held_while_the_ratio_is_above_zeta_and_is_gone_after_the_first_reach():
    war = WAR.from_rule(WarRule(10.0, 0.1, hold=True), 6.0)
    for _ in range(50):
        assert _update(war, 1.0, 0.01) == 6.0 and war.holding
    _update(war, 1.0, 0.1)  # ratio 10: reached (at ζ counts)
    assert not war.holding
    assert _update(war, 1.0, 0.01) == pytest.approx(
        0.0
    )  # then Algorithm 1's step: 6 + 0.1·(10 − 100) -> 0


@pytest.mark.parametrize("steps_per_epoch", [4, 12, 391])
def test_alpha_per_epoch_moves_lambda_as_much_per_epoch_whatever_the_steps(steps_per_epoch):
    # ζ = 30, α = 0.1 per epoch, a steady ratio of 10: one epoch adds 0.1·(30 − 10) = 2.0
    spec = WARLambda(zeta=30.0, alpha=0.1, alpha_per="epoch")
    war = make_controller(spec, steps_per_epoch=steps_per_epoch)
    for _ in range(steps_per_epoch):
        _update(war, 1.0, 0.1)
    assert war.value == pytest.approx(2.0)
    assert war.alpha == pytest.approx(0.1 / steps_per_epoch)


def test_the_default_window_is_one_epoch_of_steps():
    spec = WARLambda(zeta=30.0, ratio="window")
    assert spec.war_rule(30.0, steps_per_epoch=12).window == 12
    assert WARLambda(zeta=30.0, ratio="window", window=5).war_rule(30.0, 12).window == 5
    assert WARLambda(zeta=30.0).war_rule(30.0, 12) == WarRule(
        30.0
    )  # the paper: no window, α per step


def test_the_general_rule_with_defaults_is_algorithm_1_bit_for_bit():
    state, reference = WarRuleState(0.0), 0.0
    for l_nat, l_rob in HOSTILE:
        a, b = float(torch.tensor(l_nat)), float(torch.tensor(l_rob))
        state = war_rule_step(state, a, b, WarRule(30.0, 0.1))
        reference = war_step(reference, a, b, 30.0, 0.1, 1e-6)
        assert state.lambda_t == reference


VARIANTS = {
    "window": (WarRule(6.0, 0.37, ratio="window", window=3), 1.0),
    "window-hold-epoch": (WarRule(6.0, 0.37 / 5, ratio="window", window=5, hold=True), 4.5),
    "hold": (WarRule(6.0, 0.37, hold=True), 4.5),
    "hold-ema": (WarRule(6.0, 0.37, ratio="ema", ema_beta=0.5, hold=True), 2.0),
    "max_step": (WarRule(6.0, 0.37, max_step=0.25), 1.0),
    "everything": (WarRule(6.0, 0.37 / 4, ratio="window", window=4, hold=True, max_step=0.05), 3.0),
}
# Ratios that start far above ζ (the hold's case) and end below it, then HOSTILE's guards.
OPENING = [
    (2.3, 0.0),
    (2.0, 0.01),
    (math.nan, 0.3),
    (1.9, 0.02),
    (1.5, 0.05),
    (1.2, 0.3),
    (1.0, 0.4),
]


@pytest.mark.parametrize("name", VARIANTS)
def test_war_variant_tensor_update_equals_the_reference_step_for_step(name):
    rule, lambda0 = VARIANTS[name]
    war, state, skipped = WAR.from_rule(rule, lambda0), WarRuleState(lambda0, holding=rule.hold), 0
    held = []
    for l_nat, l_rob in OPENING + HOSTILE:
        a, b = torch.tensor(l_nat), torch.tensor(l_rob)
        state = war_rule_step(state, float(a), float(b), rule)
        skipped += not (math.isfinite(float(a)) and math.isfinite(float(b)) and float(b) >= 1e-6)
        lam = float(war.update(a, b))
        if rule.ratio == "window":  # torch sums in its own order; the reference sums exactly (fsum)
            assert lam == pytest.approx(state.lambda_t, rel=1e-12, abs=1e-12)
        else:
            assert lam == state.lambda_t  # bit for bit
        assert (war.holding, war.skipped_steps) == (state.holding, skipped)
        assert math.isfinite(lam) and lam >= 0
        held.append(state.holding)
    assert held[0] == rule.hold and not held[-1]  # the hold, where there is one, was released


@pytest.mark.parametrize("name", VARIANTS)
def test_war_variant_resumed_from_its_state_dict_continues_exactly(name):
    rule, lambda0 = VARIANTS[name]
    pairs = OPENING + HOSTILE
    straight = WAR.from_rule(rule, lambda0)
    for pair in pairs[:9]:
        _update(straight, *pair)
    resumed = WAR.from_rule(rule, lambda0)
    resumed.load_state_dict(straight.state_dict())
    assert resumed.state_dict() == straight.state_dict()
    assert [_update(resumed, *p) for p in pairs[9:]] == [_update(straight, *p) for p in pairs[9:]]
    assert resumed.state_dict() == straight.state_dict()


def _state_tensors(war: WAR) -> dict[str, torch.Tensor]:
    return {k: v for k, v in vars(war).items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("name", VARIANTS)
def test_war_state_stays_in_the_tensors_it_was_built_with(name):
    # a CUDA graph captures update once and replays it on these same tensors: never rebound
    rule, lambda0 = VARIANTS[name]
    war = WAR.from_rule(rule, lambda0)
    before = {k: (v, v.data_ptr()) for k, v in _state_tensors(war).items()}
    for pair in OPENING:
        out = war.update(torch.tensor(pair[0]), torch.tensor(pair[1]))
        assert all(
            out.data_ptr() != v.data_ptr() for v in _state_tensors(war).values()
        )  # a fresh λ_t
    war.load_state_dict(WAR.from_rule(rule, lambda0).state_dict())
    assert {k: (v, v.data_ptr()) for k, v in _state_tensors(war).items()} == before


@pytest.mark.parametrize("name", [*VARIANTS, "paper", "ema"])
def test_war_update_never_reads_a_value_back_to_the_host(name):
    # on the meta device a tensor has no value: float(), .item() or `if tensor` would raise
    rule, lambda0 = VARIANTS.get(name) or (
        WarRule(6.0, ratio="ema" if name == "ema" else "step"),
        1.0,
    )
    war = WAR.from_rule(rule, lambda0, device=torch.device("meta"))
    for _ in range(3):
        lambda_t = war.update(torch.tensor(1.0, device="meta"), torch.tensor(0.1, device="meta"))
    assert lambda_t.device.type == "meta" and lambda_t.dtype == torch.float64


def test_a_window_of_another_length_is_refused_on_load():
    state = WAR(6.0, ratio="window", window=3).state_dict()
    with pytest.raises(ValueError, match="window_nat holds 3 steps; this controller's window is 4"):
        WAR(6.0, ratio="window", window=4).load_state_dict(state)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"window": 2.5},
        {"max_step": 0.0},
        {"max_step": math.inf},
        {"ratio": "median"},
    ],
)
def test_war_variant_settings_are_checked(kwargs):
    with pytest.raises(ValueError):
        WAR(6.0, **kwargs)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: WAR(0.0), "ζ must be a finite number > 0, got 0.0"),
        (lambda: WAR(6.0, alpha=0.0), "α must be a finite number > 0, got 0.0"),
        (lambda: WAR(6.0, ratio="mean"), "ratio must be 'step', 'ema' or 'window', got 'mean'"),
        (lambda: WAR(6.0, ema_beta=1.0), r"ema_beta must be in \[0, 1\), got 1.0"),
        (lambda: WAR(6.0, window=0), "window must be a whole number of steps >= 1, got 0"),
        (lambda: WAR(6.0, max_step=0.0), "max_step must be a finite number > 0, got 0.0"),
        (lambda: WAR(6.0, min_l_rob=0.0), "min_l_rob must be > 0, got 0.0"),
        (lambda: WAR(6.0, lambda0=-1.0), "λ0 must be a finite number >= 0, got -1.0"),
        (lambda: Fixed(-1.0), "λ must be a finite number >= 0, got -1.0"),
    ],
)  # fmt: skip
def test_a_refused_setting_is_named_with_its_bound_and_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_the_bounds_themselves_are_allowed():
    """λ = 0 (no robust term) and λ below 1, ζ below 1, and an l_rob exactly at the floor."""
    assert [Fixed(v).value for v in (0.0, 0.5)] == [0.0, 0.5]
    assert WAR(0.5).zeta == 0.5
    floor = 0.125  # exact in float32 and float64
    war = WAR(8.0, alpha=0.1, min_l_rob=floor)
    _update(war, 1.0, floor)  # ratio 8 = ζ: defined, and λ stays 0
    assert war.skipped_steps == 0 and war.value == 0.0
    assert ratio_defined(1.0, floor, floor)


def test_hold_ends_on_a_ratio_exactly_at_zeta_in_the_reference_and_the_controller():
    rule = WarRule(8.0, 0.1, hold=True)
    war = WAR.from_rule(rule, 6.0)
    _update(war, 1.0, 0.125)  # ratio exactly 8
    state = war_rule_step(WarRuleState(6.0, holding=True), 1.0, 0.125, rule)
    assert not war.holding and not state.holding


def test_the_default_window_of_a_controller_is_one_step():
    """`ratio: window` without a window is the step's own ratio (the engine passes the epoch's)."""
    pairs = [(1.0, 0.1), (0.8, 0.02), (0.6, 0.3), (0.5, 0.05)]
    windowed, plain = WAR(10.0, alpha=0.1, ratio="window"), WAR(10.0, alpha=0.1)
    assert [_update(windowed, *p) for p in pairs] == [_update(plain, *p) for p in pairs]


@pytest.mark.parametrize("ratio", ["ema", "window"])
def test_a_checkpoint_without_the_ratios_memory_starts_it_afresh(ratio):
    """A resume point written before the averages, window and skip count were kept holds λ
    alone: the controller continues as a new one started from that λ."""
    used = WAR(10.0, alpha=0.1, ratio=ratio, window=3)  # a trial resumed: a new controller, then its state
    used.load_state_dict({"value": 2.0})
    fresh = WAR(10.0, alpha=0.1, ratio=ratio, window=3, lambda0=2.0)
    assert used.skipped_steps == 0
    pairs = [(0.9, 0.3), (1.1, 0.07), (0.3, 0.2), (0.7, 0.11)]
    assert [_update(used, *p) for p in pairs] == [_update(fresh, *p) for p in pairs]


def test_the_windows_losses_come_back_in_double_precision():
    """0.1 and 0.3 are not float32 numbers: a window reloaded in float32 would move λ differently."""
    a = WAR(10.0, alpha=0.1, ratio="window", window=2)
    for pair in [(0.1, 0.3), (0.3, 0.1)]:
        a.update(torch.tensor(pair[0], dtype=torch.float64), torch.tensor(pair[1], dtype=torch.float64))
    b = WAR(10.0, alpha=0.1, ratio="window", window=2)
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict()


def test_a_war_controller_gives_back_the_rule_it_was_built_from_hold_included():
    rule = WarRule(4.0, 0.01, "window", 0.9, 3, hold=True, max_step=0.5)
    assert WAR.from_rule(rule, 2.0).rule == rule  # hold, window and max_step kept, not reset to defaults


def test_a_window_state_without_its_position_restarts_the_ring_at_its_first_slot():
    war = WAR(4.0, alpha=0.01, ratio="window", window=3)
    for _ in range(2):
        war.update(torch.tensor(1.0), torch.tensor(0.5))
    state = {k: v for k, v in war.state_dict().items() if k != "window_pos"}  # written before the key existed
    war.load_state_dict(state)
    assert war.state_dict()["window_pos"] == 0.0
