"""Adversarial weight perturbation (AWP; Wu, Xia and Wang, NeurIPS 2020), on TRADES.

Each step, after the attack, AWP moves the weights to where the objective is worse, trains
from there, and moves them back, as the reference code (csdongxian/AWP, `TradesAWP`) does:

1. a proxy copy of the model takes one SGD step (lr `PROXY_LR`) *up* the TRADES objective
   l_nat + λ·l_rob on the clean and attacked batch;
2. each weight matrix and kernel (not biases or BN) is perturbed by
   δ_l = γ · ‖w_l‖ · (w'_l − w_l) / ‖w'_l − w_l‖, the proxy's move rescaled to γ of the
   layer's own norm (γ = `GAMMA`, the reference's 5e-3);
3. the losses are computed and the optimizer steps on the perturbed weights;
4. δ is taken off again, after the step.

l_nat and l_rob stay TRADES' (on the perturbed net), so λ searches and WAR apply unchanged.
The proxy's ascent weighs l_rob by the λ of the step before (a fixed λ: λ itself). The
reference starts AWP after a warm-up of 10 of its 200 epochs; wartune's short runs perturb
from the first step. A stacked member would need its own proxy step: AWP trains alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from wartune.engine.objectives import LossPair

GAMMA = 5e-3
PROXY_LR = 0.01
_TINY = 1e-20  # the reference's EPS: a layer the proxy did not move stays put


class WeightPerturbation:
    """The proxy and the per-layer perturbation of one model (see the module docstring)."""

    def __init__(self, model: nn.Module, gamma: float = GAMMA, proxy_lr: float = PROXY_LR) -> None:
        self.model, self.gamma = model, gamma
        self.proxy = copy.deepcopy(model)
        self.proxy_optimizer = torch.optim.SGD(self.proxy.parameters(), lr=proxy_lr)

    def perturbation(self, losses: Callable[[nn.Module], LossPair], lam: float) -> dict[str, torch.Tensor]:
        """δ per perturbed weight: the proxy's one ascent step on `losses(proxy)`, rescaled per layer."""
        self.proxy.load_state_dict(self.model.state_dict())
        self.proxy.train()
        l_nat, l_rob = losses(self.proxy)
        self.proxy_optimizer.zero_grad(set_to_none=True)
        (-(l_nat + lam * l_rob)).backward()
        self.proxy_optimizer.step()
        moved = dict(self.proxy.named_parameters())
        deltas = {}
        with torch.no_grad():
            for name, weight in self.model.named_parameters():
                if weight.dim() > 1:  # kernels and weight matrices; biases and BN scales stay
                    step = moved[name] - weight
                    deltas[name] = weight.norm() / (step.norm() + _TINY) * step * self.gamma
        return deltas

    def apply(self, deltas: dict[str, torch.Tensor], sign: float) -> None:
        """Add `sign` · δ to the model's weights (1: perturb; −1: take it off again)."""
        with torch.no_grad():
            for name, weight in self.model.named_parameters():
                if name in deltas:
                    weight.add_(deltas[name], alpha=sign)
