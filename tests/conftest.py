"""Shared fixtures: tiny configs that train in seconds on 2 CPU cores."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from wartune.config import TrainConfig
from wartune.data import load_dataset

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits():
    return load_dataset("digits")


@pytest.fixture
def tiny_config() -> TrainConfig:
    """A run that takes about a second: small CNN, 2 epochs, short attacks, 90 test images."""
    return TrainConfig(
        model="cnn-8",
        lam=6.0,
        epochs=2,
        batch_size=128,
        attack={"steps": 3},
        eval={"steps": 5, "max_examples": 90},
        seed=3,
        threads=1,
    )


def write_space(folder: Path, **changes) -> Path:
    """A tiny grid search space file; `changes` replace or add keys."""
    space = {
        "strategy": "grid",
        "objective": "trades",
        "dataset": "digits",
        "model": "cnn-8",
        "lambda": [1, 6],
        "epochs": 2,
        "batch_size": 128,
        "attack": {"eps": 0.2, "step": 0.05, "steps": 3},
        "eval": {"steps": 5, "max_examples": 90},
        "resources": {"cpu": 1, "gpu": 0},
        "seed": 0,
    }
    space.update(changes)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


@pytest.fixture
def tiny_space(tmp_path: Path) -> Path:
    return write_space(tmp_path)
