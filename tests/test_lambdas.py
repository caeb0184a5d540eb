"""λ controllers: Fixed, and WAR's update (Algorithm 1) against a hand-computed sequence."""

import math

import pytest

from wartune.engine.lambdas import WAR, Fixed, war_step


def test_fixed_returns_its_value_whatever_the_losses():
    c = Fixed(6.0)
    assert [c.update(a, b) for a, b in [(1.0, 0.1), (0.0, 0.0), (5.0, math.nan)]] == [6.0, 6.0, 6.0]


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
    seq = [war.update(a, b) for a, b in [(1.0, 0.1), (0.8, 0.02), (0.6, 0.01), (0.5, 0.05)]]
    assert seq == pytest.approx([2.0, 1.0, 0.0, 2.0])


def test_war_respects_lambda0_and_alpha():
    war = WAR(zeta=10.0, alpha=0.5, lambda0=3.0)
    assert war.update(2.0, 1.0) == pytest.approx(3.0 + 0.5 * (10.0 - 2.0))


@pytest.mark.parametrize("l_nat,l_rob", [(1.0, 0.0), (1.0, 1e-12), (math.nan, 0.1), (1.0, math.inf), (math.inf, 1.0)])
def test_war_skips_steps_whose_ratio_is_undefined(l_nat, l_rob):
    war = WAR(zeta=30.0)
    war.update(1.0, 0.1)  # λ = 2.0
    assert war.update(l_nat, l_rob) == pytest.approx(2.0)
    assert war.skipped_steps == 1
    assert math.isfinite(war.value) and war.value >= 0


def test_war_never_negative_or_non_finite_over_a_hostile_sequence():
    war = WAR(zeta=5.0, alpha=0.1)
    pairs = [(1.0, 0.0), (1e9, 1e-5), (0.0, 1.0), (1.0, 1e-300), (1e308, 1e-6), (0.1, 10.0)] * 20
    for a, b in pairs:
        lam = war.update(a, b)
        assert math.isfinite(lam) and lam >= 0


def test_war_state_round_trip():
    a = WAR(zeta=30.0)
    for pair in [(1.0, 0.1), (1.0, 0.0)]:
        a.update(*pair)
    b = WAR(zeta=30.0)
    b.load_state_dict(a.state_dict())
    assert (b.value, b.skipped_steps) == (a.value, a.skipped_steps)


def test_war_step_is_the_pure_rule():
    assert war_step(1.0, 2.0, 0.5, zeta=6.0, alpha=0.1, min_l_rob=1e-6) == pytest.approx(1.2)


@pytest.mark.parametrize("kwargs", [{"zeta": 0.0}, {"zeta": -1.0}, {"zeta": 30.0, "alpha": 0.0}, {"zeta": 30.0, "lambda0": -1.0}])
def test_war_refuses_bad_settings(kwargs):
    with pytest.raises(ValueError):
        WAR(**kwargs)
