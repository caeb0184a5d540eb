"""TRADES' reference training step (`trades.py`: attack on the KL term, CE + β·KL, SGD),
written plainly: the yardstick the benchmarks hold wartune's engine against."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def reference_trades_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                          eps: float, step: float, steps: int, beta: float) -> torch.Tensor:  # fmt: skip
    """One step as TRADES' `trades_loss` + `train()` do it; returns the loss (not read back)."""
    model.eval()
    x_adv = x + 0.001 * torch.randn_like(x)
    with torch.no_grad():
        p_nat = F.softmax(model(x), dim=1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss_kl = F.kl_div(F.log_softmax(model(x_adv), dim=1), p_nat, reduction="sum")
        (grad,) = torch.autograd.grad(loss_kl, [x_adv])
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    model.train()
    logits = model(x)
    loss = F.cross_entropy(logits, y) + beta * F.kl_div(
        F.log_softmax(model(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean"
    )
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss
