"""λ controllers: Fixed, and WAR's update (Algorithm 1) against a hand-computed sequence.

The controllers take and give 0-dim tensors (the trainer never reads a number back inside
a step); `war_step` is the plain-Python reading of Algorithm 1 they are checked against,
`war_ema_step` that of the `ratio: ema` option.
"""

import math

import pytest
import torch

from wartune.engine.lambdas import WAR, Fixed, WarState, war_ema_step, war_step, war_step_tensor


def _update(controller, l_nat: float, l_rob: float) -> float:
    """One update on float32 losses, as the trainer's are, read back as a float."""
    return float(controller.update(torch.tensor(l_nat), torch.tensor(l_rob)))


def test_fixed_returns_its_value_whatever_the_losses():
    c = Fixed(6.0)
    assert [_update(c, a, b) for a, b in [(1.0, 0.1), (0.0, 0.0), (5.0, math.nan)]] == [6.0, 6.0, 6.0]


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


@pytest.mark.parametrize("l_nat,l_rob", [(1.0, 0.0), (1.0, 1e-12), (math.nan, 0.1), (1.0, math.inf), (math.inf, 1.0)])
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
    (1.0, 0.1), (0.8, 0.02), (0.6, 0.01), (2.3, 0.0), (0.5, 0.05), (1.0, 1e-9), (0.7, math.nan),
    (math.nan, 0.3), (1.1, math.inf), (math.inf, 0.2), (-math.inf, 0.2), (0.9, 1e-6), (0.4, 0.013),
    (3.0, 0.0), (1e30, 1e-5), (0.05, 2.0), (1.7, 0.11),
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


def test_war_step_tensor_reports_the_skip_and_keeps_lambda():
    lam, skipped = war_step_tensor(torch.tensor(2.0, dtype=torch.float64), torch.tensor(1.0), torch.tensor(0.0), 30.0, 0.1, 1e-6)
    assert (float(lam), bool(skipped)) == (2.0, True)
    lam, skipped = war_step_tensor(lam, torch.tensor(1.0), torch.tensor(0.1), 30.0, 0.1, 1e-6)
    assert (float(lam), bool(skipped)) == (pytest.approx(4.0), False)


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


@pytest.mark.parametrize("zeta,alpha,lambda0,beta", [(30.0, 0.1, 0.0, 0.9), (6.0, 0.37, 4.5, 0.5), (10.0, 0.1, 3.0, 0.0)])
def test_war_ema_tensor_update_equals_the_reference_step_for_step(zeta, alpha, lambda0, beta):
    war = WAR(zeta=zeta, alpha=alpha, lambda0=lambda0, ratio="ema", ema_beta=beta)
    state = WarState(lambda0)
    for l_nat, l_rob in [(2.3, 0.0), (math.nan, 0.3), *HOSTILE]:  # starts with undefined steps too
        a, b = torch.tensor(l_nat), torch.tensor(l_rob)
        state = war_ema_step(state, float(a), float(b), zeta, alpha, beta, 1e-6)
        assert float(war.update(a, b)) == state.lambda_t  # bit for bit: same float64 ops in the same order
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
    assert [_update(resumed, *pair) for pair in second_half] == [_update(straight, *pair) for pair in second_half]
    assert resumed.state_dict() == straight.state_dict()
    assert (straight.state_dict()["m_rob"] > 0) == (ratio == "ema")
