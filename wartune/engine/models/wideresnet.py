"""WideResNet-D-W (Zagoruyko & Komodakis), the architecture of the paper's experiments.

Follows TRADES' reference network (pre-activation basic blocks, 1x1 shortcut on a change
of shape) but with a fractional widen factor: channel counts are rounded and kept at
least 1, so `wrn34-0.5` (the paper's thin net) exists. The pooling is adaptive, so the
same network runs on 8x8 digits and 32x32 CIFAR. `wrn34-10` on CIFAR-10 has 46.16 M
parameters, as in the literature.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from wartune.engine.models.depth import blocks_per_group


class BasicBlock(nn.Module):
    """BN-ReLU-conv3x3 twice, with an identity or 1x1-conv shortcut."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.shortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        residual = x if self.shortcut is None else self.shortcut(pre)
        return residual + out


class WideResNet(nn.Module):
    """WRN-depth-widen with depth = 6n + 4 (n basic blocks in each of three groups)."""

    def __init__(self, depth: int, widen: float, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        n = blocks_per_group(depth, "WideResNet")
        channels = [16] + [max(1, round(c * widen)) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = self._group(n, channels[0], channels[1], stride=1)
        self.block2 = self._group(n, channels[1], channels[2], stride=2)
        self.block3 = self._group(n, channels[2], channels[3], stride=2)
        self.bn = nn.BatchNorm2d(channels[3])
        self.fc = nn.Linear(channels[3], num_classes)
        self._init_weights()

    @staticmethod
    def _group(n: int, in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            *[
                BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(n)
            ]
        )

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)
