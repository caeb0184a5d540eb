"""A network defined outside wartune, as a user's package would define it: searched by
`--model tests.own_models:tiny_conv-W` with no change to wartune (`tests/test_own_model.py`)."""

from torch import nn


def tiny_conv(num_classes: int, in_channels: int, width: float) -> nn.Module:
    """Two convolutions of 4·width channels and a linear head: plain PyTorch layers."""
    channels = max(1, round(4 * width))
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, 2 * channels, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * channels, num_classes),
    )  # fmt: skip


def not_a_network(num_classes: int, in_channels: int, width: float) -> str:
    return "a string"
