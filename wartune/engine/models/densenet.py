"""DenseNet-BC-depth with growth rate k (Huang et al.), used in the paper's Table 2.

Bottleneck layers (BN-ReLU-conv1x1 to 4k, BN-ReLU-conv3x3 to k) and transitions that
halve the channels (compression 0.5). Depth = 6n + 4 gives n bottleneck layers per
dense block; `densenet40-bc-k12` is the paper's thin net and `-k64` its wide one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from wartune.engine.models.depth import blocks_per_group


class Bottleneck(nn.Module):
    """One dense layer: appends k new feature maps to its input."""

    def __init__(self, in_planes: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat([x, out], dim=1)


class Transition(nn.Module):
    """Compress channels by half and halve the spatial size."""

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2, ceil_mode=True)


class DenseNetBC(nn.Module):
    """Three dense blocks of bottleneck layers joined by compressing transitions."""

    def __init__(self, depth: int, growth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        n = blocks_per_group(depth, "DenseNet-BC")
        planes = 2 * growth
        self.conv1 = nn.Conv2d(in_channels, planes, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        for block in range(3):
            for _ in range(n):
                layers.append(Bottleneck(planes, growth))
                planes += growth
            if block < 2:
                layers.append(Transition(planes, planes // 2))
                planes //= 2
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(planes)
        self.fc = nn.Linear(planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.features(self.conv1(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
