"""The paper's lr schedules, stepped once per epoch."""

import pytest
import torch

from wartune.engine.schedules import make_scheduler


def _lrs(name: str, epochs: int) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = make_scheduler(name, opt, epochs)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_exp_decay_halves_every_epoch_after_75_percent():
    lrs = _lrs("exp-decay", 100)
    assert lrs[:75] == [0.1] * 75
    assert lrs[75:78] == pytest.approx([0.05, 0.025, 0.0125])


def test_step_divides_by_ten_at_75_and_90_percent():
    lrs = _lrs("step", 100)
    assert lrs[74] == pytest.approx(0.1) and lrs[75] == pytest.approx(0.01)
    assert lrs[89] == pytest.approx(0.01) and lrs[90] == pytest.approx(0.001)


def test_cosine_starts_at_lr_and_decreases():
    lrs = _lrs("cosine", 10)
    assert lrs[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
