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


def _kl_to_natural(model: torch.nn.Module, x: torch.Tensor, x_adv: torch.Tensor) -> float:
    with torch.no_grad():
        p = F.softmax(model(x), dim=1)
        return F.kl_div(F.log_softmax(model(x_adv), dim=1), p, reduction="batchmean").item()


def test_pgd_raises_kl_to_natural_prediction(model_and_batch):
    """PGD must beat chance by far: its KL several times that of a random corner of the ε-ball
    (measured: 4.9 against 0.58; PGD stepping in random directions lands near the latter)."""
    model, x, y = model_and_batch
    model.eval()
    cfg = PGDConfig(eps=0.2, step_size=0.05, steps=10, loss="kl", start="gaussian")
    adv = pgd_linf(model, x, y, cfg, torch.Generator().manual_seed(0)).x_adv
    signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    corner = (x + cfg.eps * signs).clamp(0.0, 1.0)
    pgd_kl, corner_kl = _kl_to_natural(model, x, adv), _kl_to_natural(model, x, corner)
    assert pgd_kl > 4 * corner_kl > 0


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
    """Each example's recorded norm is the largest of its six steps' input-gradient ℓ1 norms, each
    taken here by hand at that step's iterate (x after k steps). Some examples peak after the first
    step and some before the last, so recording only the first or only the last step fails."""
    model, x, y = model_and_batch
    model.eval()
    steps = 6
    norms = []
    for k in range(steps):
        x_k = pgd_linf(model, x, y, PGDConfig(0.2, 0.05, k, "ce", "none")).x_adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x_k), y, reduction="sum"), [x_k])
        norms.append(g.abs().flatten(1).sum(dim=1))
    by_step = torch.stack(norms)
    assert (by_step.argmax(dim=0) > 0).any() and (by_step.argmax(dim=0) < steps - 1).any()
    recorded = pgd_linf(model, x, y, PGDConfig(0.2, 0.05, steps, "ce", "none")).grad_l1_max
    assert torch.allclose(recorded, by_step.amax(dim=0), rtol=1e-5, atol=0)
