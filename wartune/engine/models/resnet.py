"""ResNet-18 and PreAct-ResNet-18 for 32×32 images, the standard CIFAR adversarial-training
baselines, with a width knob so WAR's thin → wide transfer applies to them.

ResNet-18 is pytorch-cifar's (He et al. 2016 with a 3×3 stride-1 stem): 11,173,962
parameters on CIFAR-10. PreAct-ResNet-18 is Rice et al. 2020's ("Overfitting in adversarially
robust deep learning", as RobustBench lists it): pre-activation blocks (the WideResNet's,
`wideresnet.BasicBlock`) and a last BN-ReLU before the pooling, 11,172,170 parameters. Width W
scales every stage's channels (64, 128, 256, 512) by W, rounded and at least 1: `resnet18-1`
is the standard net, `resnet18-0.5` its thin one. The pooling is adaptive, so they also run
on 8×8 digits.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from wartune.engine.models.wideresnet import BasicBlock as PreActBlock

STAGES = (64, 128, 256, 512)


def _widths(width: float) -> list[int]:
    return [max(1, round(c * width)) for c in STAGES]


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN, added to an identity or 1×1-conv-BN shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """Four stages of two residual blocks; `preact` uses pre-activation blocks (PreAct-ResNet-18)."""

    def __init__(self, width: float, num_classes: int, in_channels: int = 3, preact: bool = False) -> None:
        super().__init__()
        widths = _widths(width)
        self.preact = preact
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = None if preact else nn.BatchNorm2d(widths[0])
        block = PreActBlock if preact else ResidualBlock
        stages, in_planes = [], widths[0]
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(block(in_planes, planes, stride), block(planes, planes, 1)))
            in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(widths[-1]) if preact else None  # Rice et al.'s last BN-ReLU
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        if self.bn1 is not None:
            out = F.relu(self.bn1(out))
        out = self.layers(out)
        if self.bn is not None:
            out = F.relu(self.bn(out))
        return self.linear(self.pool(out).flatten(1))
