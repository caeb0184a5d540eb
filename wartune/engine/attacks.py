"""Projected gradient descent in the L∞ or L2 ball, the attack of training and of evaluation.

Flavours, as in the reference code of each objective:
- TRADES: start at x + 0.001·N(0, 1) and ascend KL(f(x) ‖ f(x̂)) (the regulariser itself);
- Madry / evaluation: start uniformly in the ε-ball and ascend CE(f(x̂), y);
- C&W∞ (evaluation, Table 2): ascend the CW margin max_{j≠y} z_j − z_y instead of CE.
The model is put in eval mode while attacking (batch-norm statistics are left alone),
then restored, as in TRADES' `trades_loss`. Each example's largest input-gradient norm over
the steps is recorded, in the dual norm of the threat model's (ℓ1 under L∞, ℓ2 under L2): the
paper's local-Lipschitz estimate (Sec. 4.2, Fig. 4), which bounds the loss's change over the ball.
Under L2 a step moves α along the gradient's direction (g / ‖g‖₂), the projection rescales
the perturbation into the ball, and the uniform start is a random direction at a uniformly
drawn radius (torchattacks' PGDL2).
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
Norm = Literal["linf", "l2"]
NORM_LABEL = {"linf": "L∞", "l2": "L2"}
_TINY = 1e-12  # keeps a zero gradient's or perturbation's direction finite


@dataclass(frozen=True)
class PGDConfig:
    """ε, step size and number of steps of one PGD attack, in the `norm` ball.

    `loss_scale` multiplies the loss before its input gradient is taken (and divides the
    recorded gradient norms): fp16's small gradients would underflow to 0 and lose their sign.
    """

    eps: float
    step_size: float
    steps: int
    loss: AttackLoss = "ce"
    start: RandomStart = "uniform"
    loss_scale: float = 1.0
    norm: Norm = "linf"


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
    elif cfg.norm == "l2":  # a random direction, at a radius drawn uniformly in [0, ε]
        direction = torch.randn(shape, generator=generator, dtype=dtype)
        radius = torch.rand(shape[0], generator=generator, dtype=dtype) * cfg.eps
        noise = direction / (_l2(direction) + _TINY) * radius.view(-1, *[1] * (len(shape) - 1))
    else:
        noise = (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * cfg.eps
    return host_to_device(noise, x.device)


def _l2(t: torch.Tensor) -> torch.Tensor:
    """Each example's ℓ2 norm, shaped to broadcast over it."""
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))


def project(x_adv: torch.Tensor, x: torch.Tensor, cfg: PGDConfig) -> torch.Tensor:
    """x̂ back into the ε-ball around x (clipped per pixel under L∞, rescaled under L2) and [0, 1]."""
    if cfg.norm == "l2":
        delta = x_adv - x
        delta = delta * torch.clamp(cfg.eps / (_l2(delta) + _TINY), max=1.0)
        return (x + delta).clamp(0.0, 1.0)
    return torch.min(torch.max(x_adv, x - cfg.eps), x + cfg.eps).clamp(0.0, 1.0)


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
    """Run `cfg.steps` ascent steps from x + `noise` (the gradient's sign under L∞, its
    direction under L2), projecting onto the ε-ball around x ∩ [0, 1] after each.

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
        grad = grad.detach()
        if cfg.norm == "l2":
            dual = grad.flatten(1).norm(dim=1) / cfg.loss_scale
            x_adv = x_adv.detach() + cfg.step_size * grad / (_l2(grad) + _TINY)
        else:
            dual = grad.abs().flatten(1).sum(dim=1) / cfg.loss_scale
            x_adv = x_adv.detach() + cfg.step_size * grad.sign()
        grad_l1_max = torch.maximum(grad_l1_max, dual)  # the dual norm's (ℓ1 under L∞): see the module docstring
        x_adv = project(x_adv, x, cfg)
    model.train(was_training)
    return AttackResult(x_adv.detach(), grad_l1_max)
