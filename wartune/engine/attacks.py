"""Projected gradient descent in the L∞ ball, the attack of training and of evaluation.

Flavours, as in the reference code of each objective:
- TRADES: start at x + 0.001·N(0, 1) and ascend KL(f(x) ‖ f(x̂)) (the regulariser itself);
- Madry / evaluation: start uniformly in the ε-ball and ascend CE(f(x̂), y);
- C&W∞ (evaluation, Table 2): ascend the CW margin max_{j≠y} z_j − z_y instead of CE.
The model is put in eval mode while attacking (batch-norm statistics are left alone),
then restored, as in TRADES' `trades_loss`. Each example's largest input-gradient ℓ1
norm over the steps is recorded: the paper's local-Lipschitz estimate (Sec. 4.2, Fig. 4).
Under mixed precision the model is an `AutocastModel` (`precision.py`): x̂, the ε-ball
projection and the gradient's sign stay fp32; only the model call is cast.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from wartune.engine.devices import host_to_device

AttackLoss = Literal["kl", "ce", "cw"]
RandomStart = Literal["gaussian", "uniform", "none"]


@dataclass(frozen=True)
class PGDConfig:
    """ε, step size and number of steps of one L∞ PGD attack.

    `loss_scale` multiplies the loss before its input gradient is taken (and divides the
    recorded ℓ1 norms): fp16's small gradients would underflow to 0 and lose their sign.
    """

    eps: float
    step_size: float
    steps: int
    loss: AttackLoss = "ce"
    start: RandomStart = "uniform"
    loss_scale: float = 1.0


@dataclass
class AttackResult:
    """The adversarial batch and, per example, the largest input-gradient ℓ1 norm seen."""

    x_adv: torch.Tensor
    grad_l1_max: torch.Tensor


def start_noise(x: torch.Tensor, cfg: PGDConfig, generator: torch.Generator | None) -> torch.Tensor | None:
    """The random start's offset from x (None for `start: none`), drawn on the CPU generator.

    Drawn on the host, so CPU and GPU runs start alike and a resumed run that restores the
    generator draws the same numbers; then copied without blocking. It is an input of the
    attack rather than a draw inside it, so a captured CUDA graph of the step replays with a
    fresh offset copied into its static buffer every step (`engine/graphs.py`).
    """
    if cfg.start == "none":
        return None
    shape, dtype = x.shape, x.dtype
    if cfg.start == "gaussian":
        noise = 0.001 * torch.randn(shape, generator=generator, dtype=dtype)
    else:
        noise = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * cfg.eps
    return host_to_device(noise, x.device)


def stacked_start_noise(
    batches: Sequence[torch.Tensor], cfg: PGDConfig, generators: Sequence[torch.Generator]
) -> torch.Tensor | None:
    """The random starts of a stack's member-major batch: each member's `start_noise` for its
    own batch from its own generator, in member order (None for `start: none`)."""
    noises = [start_noise(x, cfg, g) for x, g in zip(batches, generators, strict=True)]
    return None if noises[0] is None else torch.cat([n for n in noises if n is not None])


def _attack_loss(model: nn.Module, x_adv: torch.Tensor, target: torch.Tensor, loss: AttackLoss) -> torch.Tensor:
    """Summed over the batch, so each row of the input gradient is that example's own."""
    logits = model(x_adv)
    if loss == "kl":
        return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="sum")
    if loss == "cw":
        return cw_margin(logits, target).sum()
    return F.cross_entropy(logits, target, reduction="sum")


def cw_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin per example: the best wrong logit minus the true one."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    wrong = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return wrong - true


def pgd_linf(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: PGDConfig,
    generator: torch.Generator | None = None,
) -> AttackResult:
    """PGD from a random start drawn on `generator` (see `pgd_from`)."""
    return pgd_from(model, x, y, cfg, start_noise(x, cfg, generator))


def pgd_from(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: PGDConfig, noise: torch.Tensor | None
) -> AttackResult:
    """Run `cfg.steps` signed-gradient ascent steps from x + `noise`, projecting onto B∞(x, ε) ∩ [0, 1].

    Nothing here reads a number back to the host, so the whole attack can be captured in a
    CUDA graph.
    """
    was_training = model.training
    model.eval()
    x = x.detach()
    if cfg.loss == "kl":
        with torch.no_grad():
            target = F.softmax(model(x), dim=1)
    else:
        target = y
    x_adv = x.clone() if noise is None else (x + noise).clamp(0.0, 1.0)
    grad_l1_max = torch.zeros(x.shape[0], device=x.device)
    for _ in range(cfg.steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            loss = _attack_loss(model, x_adv, target, cfg.loss)
            (grad,) = torch.autograd.grad(loss * cfg.loss_scale, [x_adv])
        grad_l1 = grad.detach().abs().flatten(1).sum(dim=1) / cfg.loss_scale
        grad_l1_max = torch.maximum(grad_l1_max, grad_l1)
        x_adv = x_adv.detach() + cfg.step_size * grad.sign()
        x_adv = torch.min(torch.max(x_adv, x - cfg.eps), x + cfg.eps).clamp(0.0, 1.0)
    model.train(was_training)
    return AttackResult(x_adv.detach(), grad_l1_max)
