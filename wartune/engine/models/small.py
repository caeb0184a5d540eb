"""Small models: `mlp-W` (two hidden layers of W units) and `cnn-W` (two convolutions, W
and 2W channels) for quick runs and tests, whose widths are the sweep variable as for WRN;
and `smallcnn`, TRADES' MNIST network, at its one fixed size."""

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


class TradesSmallCNN(nn.Module):
    """TRADES' MNIST `SmallCNN` (models/small_cnn.py): conv3x3 32-32, max-pool, conv3x3 64-64,
    max-pool, then fc 200 (dropout 0.5) - 200 - classes, ReLU throughout, unpadded convolutions.

    Kaiming-normal convolutions, zero biases and a zero last layer, as TRADES initialises it.
    On 28x28 MNIST the features are 64x4x4 (312,202 parameters); `image_size` must be at least 16.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int) -> None:
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"smallcnn needs images of at least 16 pixels, got {image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side * side, 200), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, num_classes),
        )  # fmt: skip
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.classifier[-1].weight)
        nn.init.zeros_(self.classifier[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
