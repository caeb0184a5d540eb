"""Where a run's tensors live, and how the few host-drawn numbers reach the device.

Random numbers are drawn on the trial's CPU generator (so a CPU and a GPU run draw the same
ones, and a resume restores one generator); the small tensors they fill are copied to the
device from pinned memory without blocking, so drawing them never stalls the GPU's queue.
"""

from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def host_to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor.to(device)` that does not wait: a pageable copy to CUDA would synchronise."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)
