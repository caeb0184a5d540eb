"""objectives.py against hand-computed values on fixed logits (PAPER.md's objective table)."""

import math

import pytest
import torch

from wartune.engine.objectives import madry_losses, trades_losses

LOGITS_NAT = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
LOGITS_ADV = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
Y = torch.tensor([0, 1])


def _softmax(a: float, b: float) -> tuple[float, float]:
    ea, eb = math.exp(a), math.exp(b)
    return ea / (ea + eb), eb / (ea + eb)


def test_trades_natural_term_is_cross_entropy_by_hand():
    l_nat, _ = trades_losses(LOGITS_NAT, LOGITS_ADV, Y)
    expected = (-math.log(_softmax(2, 0)[0]) - math.log(_softmax(0, 1)[1])) / 2
    assert l_nat.item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.2200948, rel=1e-6)  # (log(1 + e^-2) + log(1 + e^-1)) / 2


def test_trades_robust_term_is_batch_mean_kl_of_natural_to_adversarial():
    _, l_rob = trades_losses(LOGITS_NAT, LOGITS_ADV, Y)
    kl = 0.0
    for nat, adv in (((2, 0), (1, 1)), ((0, 1), (1, 0))):
        p, q = _softmax(*nat), _softmax(*adv)
        kl += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert l_rob.item() == pytest.approx(kl / 2, rel=1e-6)
    assert kl / 2 == pytest.approx(0.3949652, rel=1e-6)


def test_trades_robust_term_is_zero_when_attack_changes_nothing():
    _, l_rob = trades_losses(LOGITS_NAT, LOGITS_NAT.clone(), Y)
    assert l_rob.item() == pytest.approx(0.0, abs=1e-7)


def test_madry_robust_term_clips_each_example_at_zero():
    l_nat, l_rob = madry_losses(LOGITS_NAT, LOGITS_ADV, Y)
    ce_nat = [-math.log(_softmax(2, 0)[0]), -math.log(_softmax(0, 1)[1])]
    ce_adv = [-math.log(_softmax(1, 1)[0]), -math.log(_softmax(1, 0)[1])]
    assert l_nat.item() == pytest.approx(sum(ce_nat) / 2, rel=1e-6)
    assert l_rob.item() == pytest.approx(sum(max(a - n, 0.0) for a, n in zip(ce_adv, ce_nat, strict=True)) / 2, rel=1e-6)


def test_madry_robust_term_is_zero_when_attack_lowers_the_loss():
    # adversarial logits more confident in the true class than natural ones
    better = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    _, l_rob = madry_losses(LOGITS_NAT, better, Y)
    assert l_rob.item() == 0.0


def test_madry_clip_is_per_example_not_per_batch():
    # example 0 gains exactly 1 nat (log 2 -> log 2e); example 1 loses about 2.1 nats: the
    # batch-mean difference is negative, but the per-example clip keeps example 0's gain.
    nat = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    adv = torch.tensor([[0.0, math.log(2 * math.e - 1)], [0.0, 4.0]])
    y = torch.tensor([0, 1])
    _, l_rob = madry_losses(nat, adv, y)
    assert l_rob.item() == pytest.approx(0.5, rel=1e-5)
