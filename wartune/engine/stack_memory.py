"""How much memory a stack of K trials needs, and the largest K that fits: asked before a
stacked search starts, so that `--stack 64` on a wide net is refused in one line instead of
dying in the middle of a search with the machine's out-of-memory killer.

The estimate is built on the meta device (no memory, no arithmetic): every member holds its
weights four times (weights, gradients, SGD momentum, the best epoch's copy), and a training
step keeps the activations of one forward pass per batch of each member twice (the natural
and the adversarial forward, both kept for the backward pass); the attack's own forward
passes are freed step by step and fit in the same room. It is a floor, not a measurement:
the check refuses what cannot fit, it does not promise what will.
"""

from __future__ import annotations

import torch
from torch import nn

from wartune.engine.data import DatasetInfo
from wartune.engine.models import create_model

FLOAT_BYTES = 4
WEIGHT_COPIES = 4  # weights, gradients, momentum, best weights
KEPT_FORWARDS = 2  # the natural and the adversarial forward pass, kept for the backward pass


def member_bytes(model_name: str, info: DatasetInfo, batch_size: int) -> int:
    """The memory one member of a stack needs to train (see the module docstring)."""
    with torch.device("meta"):
        model = create_model(model_name, info.num_classes, info.in_channels, info.image_size)
        activations = 0

        def count(module: nn.Module, _: object, output: object) -> None:
            nonlocal activations
            if isinstance(output, torch.Tensor) and not list(module.children()):
                activations += output.numel()

        hooks = [m.register_forward_hook(count) for m in model.modules()]
        model(torch.empty(batch_size, info.in_channels, info.image_size, info.image_size))
        for hook in hooks:
            hook.remove()
    weights = sum(p.numel() for p in model.parameters())
    return FLOAT_BYTES * (WEIGHT_COPIES * weights + KEPT_FORWARDS * activations)


def largest_stack(model_name: str, info: DatasetInfo, batch_size: int, free_bytes: int) -> int:
    """The most members whose stack fits in `free_bytes` (0: not even one)."""
    return free_bytes // member_bytes(model_name, info, batch_size)


def free_bytes(device: str, gpu_share: float) -> int:
    """Memory a stack may use: the GPU's share (`resources.gpu`) on CUDA, else this machine's
    available memory (Linux's MemAvailable; the physical memory elsewhere)."""
    if device == "cuda" and torch.cuda.is_available():
        _, total = torch.cuda.mem_get_info()
        return int(total * min(gpu_share or 1.0, 1.0))
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
