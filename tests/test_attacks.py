"""PGD stays in the ε-ball and [0, 1], raises its loss, and records gradient ℓ1 norms."""

import pytest
import torch
from torch.nn import functional as F

from wartune.engine.attacks import PGDConfig, pgd_linf
from wartune.engine.models import create_model


@pytest.fixture(scope="module")
def trained_state(digits):
    """A small CNN given 60 plain SGD steps, so its loss surface is not flat."""
    torch.manual_seed(0)
    model = create_model("cnn-8", 10, 1, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for i in range(60):
        idx = torch.arange(i * 23, i * 23 + 64) % len(digits.train_y)
        opt.zero_grad()
        F.cross_entropy(model(digits.train_x[idx]), digits.train_y[idx]).backward()
        opt.step()
    return model.state_dict()


@pytest.fixture
def model_and_batch(digits, trained_state):
    model = create_model("cnn-8", 10, 1, 8)
    model.load_state_dict(trained_state)
    return model, digits.test_x[:64], digits.test_y[:64]


@pytest.mark.parametrize("loss,start", [("ce", "uniform"), ("kl", "gaussian")])
def test_pgd_stays_inside_eps_ball_and_unit_box(model_and_batch, loss, start):
    model, x, y = model_and_batch
    cfg = PGDConfig(eps=0.2, step_size=0.07, steps=7, loss=loss, start=start)
    adv = pgd_linf(model, x, y, cfg, torch.Generator().manual_seed(1)).x_adv
    assert (adv - x).abs().max().item() <= 0.2 + 1e-6
    assert adv.min().item() >= 0.0 and adv.max().item() <= 1.0


def test_pgd_raises_cross_entropy(model_and_batch):
    model, x, y = model_and_batch
    model.eval()
    cfg = PGDConfig(eps=0.2, step_size=0.05, steps=10, loss="ce", start="none")
    adv = pgd_linf(model, x, y, cfg).x_adv
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > 1.5 * F.cross_entropy(model(x), y)


def test_pgd_raises_kl_to_natural_prediction(model_and_batch):
    model, x, y = model_and_batch
    model.eval()
    cfg = PGDConfig(eps=0.2, step_size=0.05, steps=10, loss="kl", start="gaussian")
    adv = pgd_linf(model, x, y, cfg, torch.Generator().manual_seed(0)).x_adv
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
        kl = F.kl_div(F.log_softmax(model(adv), dim=1), p, reduction="batchmean")
    assert kl.item() > 1e-3


def test_pgd_restores_training_mode_and_leaves_batchnorm_statistics(model_and_batch):
    model, x, y = model_and_batch
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pgd_linf(model, x, y, PGDConfig(0.2, 0.05, 3))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_gradient_l1_of_one_step_matches_per_example_gradient(model_and_batch):
    model, x, y = model_and_batch
    model.eval()
    result = pgd_linf(model, x, y, PGDConfig(eps=0.2, step_size=0.05, steps=1, loss="ce", start="none"))
    for i in (0, 5):
        xi = x[i : i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i : i + 1]), [xi])
        assert result.grad_l1_max[i].item() == pytest.approx(g.abs().sum().item(), rel=1e-4)


def test_gradient_l1_is_the_maximum_over_steps(model_and_batch):
    model, x, y = model_and_batch
    one = pgd_linf(model, x, y, PGDConfig(0.2, 0.05, 1, "ce", "none")).grad_l1_max
    many = pgd_linf(model, x, y, PGDConfig(0.2, 0.05, 6, "ce", "none")).grad_l1_max
    assert torch.all(many >= one - 1e-6)
