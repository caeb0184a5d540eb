"""The depth rule WideResNet and DenseNet-BC share: depth = 6n + 4, three groups of n blocks."""


def blocks_per_group(depth: int, family: str) -> int:
    """n for a depth of 6n + 4 (n ≥ 1); a one-line error naming the family otherwise."""
    if (depth - 4) % 6 != 0 or depth < 10:
        raise ValueError(f"{family} depth must be 6n + 4 with n >= 1, got {depth}")
    return (depth - 4) // 6
