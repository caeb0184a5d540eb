"""Small models for quick runs and tests: `mlp-W` (two hidden layers of W units) and
`cnn-W` (two convolutions, W and 2W channels). Widths are the sweep variable, as for WRN."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten, two ReLU hidden layers of `width` units, linear head."""

    def __init__(self, width: int, num_classes: int, in_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """conv3x3(W)-BN-ReLU, conv3x3(2W, stride 2)-BN-ReLU, global average pool, linear."""

    def __init__(self, width: int, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(2 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
