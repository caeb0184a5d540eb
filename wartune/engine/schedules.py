"""Learning-rate schedules of the paper (Sec. 5 / App.), stepped once per epoch.

- `exp-decay`: the paper's main schedule: full lr for the first 75 % of the epochs, then
  halved every epoch (with 100 epochs: halved after epoch 75, 76, ...);
- `step`: ÷10 at 75 % and again at 90 % of the epochs (TRADES' schedule);
- `cosine`: cosine annealing to 0 over all epochs;
- `constant`.
"""

from __future__ import annotations

from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, MultiStepLR

ScheduleName = Literal["exp-decay", "step", "cosine", "constant"]


def decay_start(epochs: int) -> int:
    """The first (0-based) epoch with a reduced lr under exp-decay and step."""
    return max(1, round(0.75 * epochs))


class _HalveAfter:
    """Picklable multiplier for LambdaLR: 1 before `start`, then 0.5 per epoch since."""

    def __init__(self, start: int) -> None:
        self.start = start

    def __call__(self, epoch: int) -> float:
        return 0.5 ** max(0, epoch - self.start + 1)


def make_scheduler(name: ScheduleName, optimizer: Optimizer, epochs: int) -> LRScheduler:
    """Build the per-epoch scheduler named in the config."""
    if name == "exp-decay":
        return LambdaLR(optimizer, _HalveAfter(decay_start(epochs)))
    if name == "step":
        milestones = sorted({decay_start(epochs), max(1, round(0.9 * epochs))})
        return MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if name == "cosine":
        return CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "constant":
        return LambdaLR(optimizer, _Constant())
    raise ValueError(f"unknown schedule {name!r}")


class _Constant:
    def __call__(self, epoch: int) -> float:
        return 1.0
