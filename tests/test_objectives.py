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


def _softmax3(logits: list[float]) -> list[float]:
    exps = [math.exp(v) for v in logits]
    return [e / sum(exps) for e in exps]


def test_mart_losses_by_hand_on_three_classes():
    """MART's reference loss, written out: BCE on the attacked logits (CE plus −log(1 − p) of the
    most likely wrong class: class 2 for example 0, whose attack made it top; class 0 for example
    1, whose top class is still its label) and the clean-to-attacked KL weighted by 1 − p_y(x)."""
    from wartune.engine.objectives import mart_losses

    nat, adv, y = [[2.0, 0.0, 1.0], [0.0, 1.0, 0.5]], [[0.5, 1.0, 2.0], [1.0, 0.0, 2.0]], [0, 2]
    l_nat, l_rob = mart_losses(torch.tensor(nat), torch.tensor(adv), torch.tensor(y))
    bce, weighted = 0.0, 0.0
    for n, a, label, wrong in zip(nat, adv, y, (2, 0), strict=True):
        p, q = _softmax3(n), _softmax3(a)
        bce += -math.log(q[label]) - math.log(1.0001 - q[wrong] + 1e-12)
        kl = sum(pc * (math.log(pc + 1e-12) - math.log(qc + 1e-12)) for pc, qc in zip(p, q, strict=True))
        weighted += kl * (1.0000001 - p[label])
    assert l_nat.item() == pytest.approx(bce / 2, rel=1e-6)
    assert l_rob.item() == pytest.approx(weighted / 2, rel=1e-6)
    assert (bce / 2, weighted / 2) == (pytest.approx(1.82127, abs=1e-5), pytest.approx(0.32372, abs=1e-5))


def test_mart_weighs_out_the_examples_the_clean_net_is_sure_of():
    from wartune.engine.objectives import mart_losses

    sure = torch.tensor([[30.0, 0.0, 0.0]])  # p_y(x) = 1 to float precision: its KL counts for nothing
    _, l_rob = mart_losses(sure, torch.tensor([[0.0, 3.0, 0.0]]), torch.tensor([0]))
    assert l_rob.item() == pytest.approx(0.0, abs=1e-5)


def test_fgsm_rs_trains_on_one_step_of_one_and_a_quarter_eps_from_a_uniform_start_whatever_the_attack_block():
    from wartune.engine.config import TrainConfig
    from wartune.engine.objectives import get_objective

    config = TrainConfig(model="cnn-4", dataset="digits", objective="fgsm-rs", attack={"steps": 10, "step": 0.01})
    pgd = config.train_pgd()
    assert (pgd.steps, pgd.step_size, pgd.loss, pgd.start) == (1, pytest.approx(1.25 * 0.2), "ce", "uniform")
    assert get_objective("fgsm-rs").losses is madry_losses  # generalised Madry: l_nat + λ·clipped CE increase
    assert config.eval_pgd().steps == 20  # evaluation is PGD-20 as for every objective



def test_mart_stays_finite_when_the_attack_drives_a_class_to_probability_zero():
    from wartune.engine.objectives import mart_losses

    adv = torch.tensor([[200.0, 0.0, -200.0]])  # softmax underflows to exactly 0 for class 2
    assert (torch.softmax(adv, dim=1) == 0).any()
    l_nat, l_rob = mart_losses(torch.tensor([[0.0, 1.0, 2.0]]), adv, torch.tensor([1]))
    assert math.isfinite(l_nat.item()) and math.isfinite(l_rob.item())
