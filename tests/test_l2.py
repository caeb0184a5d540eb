"""The L2 threat model (`threat: {norm: l2, eps}`): PGD-L2 against the exact worst case of a
linear model, its start and steps inside the ball, the dual-norm Lipschitz figure, the
config's defaults, and an L2 search and an L2 evaluation end to end."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from tests.conftest import write_space
from tests.test_cli import _run
from wartune.engine.attacks import PGDConfig, pgd_from, pgd_linf, start_noise
from wartune.engine.config import TrainConfig

EPS = 0.1


def _linear() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Two classes split by w·x + b: the L2 worst case moves x by ε along −w/‖w‖ against its
    class, so an example is robust exactly when its margin |w·x + b| / ‖w‖₂ exceeds ε (the images
    sit near 0.5, so the [0, 1] box never binds)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([torch.zeros(16), torch.linspace(-1, 1, 16)]))
        model[1].bias.zero_()
    x = 0.5 + 0.3 * (torch.rand(200, 1, 4, 4) - 0.5)
    y = (model(x).argmax(dim=1)).long()  # every example correct: robustness is the margin alone
    return model, x, y


def test_pgd_l2_finds_the_exact_worst_case_of_a_linear_model_and_stays_in_the_ball():
    model, x, y = _linear()
    w = model[1].weight[1] - model[1].weight[0]
    margin = (model(x)[:, 1] - model(x)[:, 0]).abs() / w.norm()
    cfg = PGDConfig(EPS, 2.5 * EPS / 20, 20, loss="ce", start="uniform", norm="l2")
    result = pgd_linf(model, x, y, cfg, torch.Generator().manual_seed(0))
    robust = model(result.x_adv).argmax(dim=1) == y
    near = (margin - EPS).abs() < 0.01  # too close to the boundary for 20 steps to settle: left out
    assert torch.equal(robust[~near], (margin > EPS)[~near]) and 0 < int((margin > EPS).sum()) < len(y)
    delta = (result.x_adv - x).flatten(1)
    assert delta.norm(dim=1).max() <= EPS * (1 + 1e-5) and delta.abs().max() > EPS / 4  # the L2 ball, not L∞'s
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1


def test_the_l2_start_is_a_random_direction_inside_the_ball():
    x = torch.full((500, 1, 4, 4), 0.5)
    noise = start_noise(x, PGDConfig(EPS, 0.1, 1, norm="l2"), torch.Generator().manual_seed(1))
    assert noise is not None
    norms = noise.flatten(1).norm(dim=1)
    assert norms.max() <= EPS + 1e-6 and norms.min() < EPS / 10 and norms.mean() == pytest.approx(EPS / 2, rel=0.1)


def test_the_lipschitz_figure_is_the_gradients_l2_norm_under_l2():
    model, x, y = _linear()
    cfg = PGDConfig(EPS, 0.05, 1, loss="ce", start="none", norm="l2")
    recorded = pgd_from(model, x, y, cfg, None).grad_l1_max
    x_req = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x_req), y, reduction="sum"), [x_req])
    assert torch.allclose(recorded, grad.flatten(1).norm(dim=1))  # the dual of L2 is L2 (ℓ1 would be far larger)
    assert not torch.allclose(recorded, grad.flatten(1).abs().sum(dim=1))


def test_an_l2_threat_sets_both_attacks_and_needs_its_eps(tmp_path, capsys):
    config = TrainConfig(model="cnn-4", dataset="digits", threat={"norm": "l2", "eps": 1.0}, attack={"steps": 5})
    train, evaluation = config.train_pgd(), config.eval_pgd()
    assert (train.norm, train.eps, train.step_size) == ("l2", 1.0, pytest.approx(2.5 * 1.0 / 5))
    assert (evaluation.norm, evaluation.eps, evaluation.steps, evaluation.step_size) == ("l2", 1.0, 20, pytest.approx(2.5 / 20))
    plain = TrainConfig(model="cnn-4", dataset="digits").eval_pgd()
    assert (plain.norm, plain.eps, plain.step_size) == ("linf", 0.2, 0.05)  # L∞ as before
    space = write_space(tmp_path, threat={"norm": "l2"})
    code, _, err = _run(["search", "--space", str(space), "--out", str(tmp_path / "runs"), "--no-mlflow"], capsys)
    assert code == 2 and "an L2 threat model needs its eps" in err and len(err.strip().splitlines()) == 1


@pytest.mark.e2e
def test_an_l2_search_and_an_l2_evaluation_run_end_to_end(tmp_path, capsys):
    space = write_space(tmp_path, model="mlp-64", epochs=2, threat={"norm": "l2", "eps": 1.0}, attack={"steps": 3},
                        **{"lambda": [1]})  # fmt: skip
    out = tmp_path / "runs"
    code, _, err = _run(["search", "--space", str(space), "--out", str(out), "--no-mlflow"], capsys)
    assert code == 0, err
    [trial] = pq.read_table(out / "tiny" / "trials.parquet").to_pylist()
    assert trial["status"] == "finished" and trial["eps"] == 1.0 and trial["attack_step"] == pytest.approx(2.5 / 3)
    assert trial["test_rob_acc"] < trial["test_nat_acc"]  # the L2 attack takes something
    model_dir = out / "tiny" / "models" / trial["trial_id"]
    code, out_text, err = _run(["evaluate", str(model_dir), "--attacks", "pgd20,apgd-ce", "--max-examples", "60"], capsys)
    assert code == 0, err
    rows = pq.read_table(model_dir / "evaluation.parquet").to_pylist()
    assert [r["budget"].split(":")[0] for r in rows] == ["L2 ε 1", "L2 ε 1"] and "L2 ε = 1" in out_text
    assert rows[1]["rob_acc"] <= rows[0]["nat_acc"]
