"""The defences beyond TRADES and Madry through a search (MART, FGSM-RS, AWP), and AWP on TRADES
(`engine/awp.py`, objective `trades-awp`): the weight perturbation against its formula computed
by hand, a training step that descends from the perturbed weights and takes the perturbation off
again. Their losses by hand are in test_objectives.py (which the mutation tool runs: no search there)."""

from __future__ import annotations

import copy
import math

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from tests.conftest import write_space
from tests.test_cli import _run
from wartune.engine.attacks import pgd_from
from wartune.engine.awp import GAMMA, WeightPerturbation
from wartune.engine.config import TrainConfig
from wartune.engine.objectives import trades_losses
from wartune.engine.trainer import Trainer


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_each_weight_moves_by_gamma_of_its_norm_along_the_objectives_gradient():
    model = _net()
    x, x_adv, y, lam = torch.rand(6, 1, 4, 4), torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2]), 6.0
    deltas = WeightPerturbation(model).perturbation(lambda net: trades_losses(net(x), net(x_adv), y), lam)
    l_nat, l_rob = trades_losses(model(x), model(x_adv), y)
    grads = dict(zip([n for n, _ in model.named_parameters()], torch.autograd.grad(l_nat + lam * l_rob, list(model.parameters())), strict=True))
    assert set(deltas) == {"1.weight", "3.weight"}  # weight matrices only: biases stay
    for name, weight in model.named_parameters():
        if name in deltas:  # δ = γ ‖w‖ g / ‖g‖: the proxy's ascent step, rescaled to γ of the layer's norm
            expected = GAMMA * weight.norm() * grads[name] / grads[name].norm()
            assert torch.allclose(deltas[name], expected, atol=1e-6)  # float32 differences of w′ − w: 1e-7 here
            assert deltas[name].norm() == pytest.approx(GAMMA * weight.norm().item(), rel=1e-5)


def test_an_awp_step_descends_from_the_perturbed_weights_and_takes_the_perturbation_off(digits):
    config = TrainConfig(model="mlp-32", objective="trades-awp", lam=6.0, epochs=1, weight_decay=0.0, attack={"steps": 2})
    trainer = Trainer(config, digits)
    x, y = trainer.data.train_x[:32], trainer.data.train_y[:32]
    before = copy.deepcopy(trainer.model)
    trainer.step_on(x, y, None)

    # by hand: the same attack on the weights before, δ on a copy, the gradient at w + δ, one SGD step of lr
    x_adv = pgd_from(before, x, y, trainer.train_attack, None).x_adv
    deltas = WeightPerturbation(copy.deepcopy(before)).perturbation(lambda net: trades_losses(net(x), net(x_adv), y), 6.0)
    perturbed = copy.deepcopy(before)
    with torch.no_grad():
        for name, weight in perturbed.named_parameters():
            weight.add_(deltas.get(name, torch.zeros_like(weight)))
    l_nat, l_rob = trades_losses(perturbed(x), perturbed(x_adv), y)
    grads = torch.autograd.grad(l_nat + 6.0 * l_rob, list(perturbed.parameters()))
    for (name, after), start, grad in zip(trainer.model.named_parameters(), before.parameters(), grads, strict=True):
        assert torch.allclose(after, start - config.lr * grad, atol=1e-6), name  # δ is gone; the step used w + δ's gradient
    plain = Trainer(config.model_copy(update={"objective": "trades"}), digits)
    plain.step_on(x, y, None)
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain.model.parameters(), trainer.model.parameters(), strict=True))


@pytest.mark.e2e
def test_trades_awp_trains_through_a_search_and_refuses_a_stack(tmp_path, capsys):
    space = write_space(tmp_path, objective="trades-awp", model="mlp-64", epochs=2, **{"lambda": [1, 6]})
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow"], capsys)
    assert code == 0, err
    trials = pq.read_table(tmp_path / "runs" / "tiny" / "trials.parquet").to_pylist()
    assert {(t["objective"], t["status"]) for t in trials} == {("trades-awp", "finished")} and len(trials) == 2
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "other"), "--no-mlflow", "--stack", "2"], capsys)
    assert code == 2 and "trades-awp cannot be stacked" in err and len(err.strip().splitlines()) == 1


@pytest.mark.e2e
@pytest.mark.parametrize("objective", ["mart", "fgsm-rs"])
def test_mart_and_fgsm_rs_train_through_a_search(tmp_path, capsys, objective):
    space = write_space(tmp_path, objective=objective, model="mlp-64", epochs=2, **{"lambda": [1, 6]})
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow"], capsys)
    assert code == 0, err
    trials = pq.read_table(tmp_path / "runs" / "tiny" / "trials.parquet").to_pylist()
    assert {(t["objective"], t["status"]) for t in trials} == {(objective, "finished")} and len(trials) == 2
    assert all(math.isfinite(t["zeta"]) and t["zeta"] > 0 for t in trials)  # l_nat / l_rob: what WAR would transfer
    steps = {(t["attack_steps"], round(t["attack_step"], 6)) for t in trials}
    assert steps == ({(1, 0.25)} if objective == "fgsm-rs" else {(3, 0.05)})  # fgsm-rs: one step of 1.25 ε (ε 0.2)
