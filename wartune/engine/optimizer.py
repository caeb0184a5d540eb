"""The optimizer every run trains with: SGD with momentum and weight decay (the paper's, TRADES').

On CUDA it is PyTorch's fused SGD: one kernel updates every parameter, where the default
launches a few per parameter tensor (a WRN-34 has over a hundred), and it is the
implementation that reads its learning rate from a device tensor, which a captured step
needs (`graphs.TensorLR`). On the CPU it is PyTorch's default, so CPU runs are exactly what
they were.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from wartune.engine.config import TrainingSettings


def build_sgd(params: Iterable[torch.nn.Parameter], config: TrainingSettings, device: torch.device) -> torch.optim.SGD:
    """SGD with the config's lr, momentum and weight decay; fused on CUDA."""
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        fused=True if device.type == "cuda" else None,
    )  # fmt: skip


def match_device(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Give loaded param groups this device's implementation (a resume point carries its writer's)."""
    for group in optimizer.param_groups:
        group["fused"] = device.type == "cuda"
        group["foreach"] = None
