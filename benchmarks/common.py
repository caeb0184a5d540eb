"""What the GPU benchmarks share: synthetic CIFAR-10 slices, device-synced timing, rotating
rounds, and one machine-readable line of figures per script for `gpu_all.sh`'s table.

Every side of a comparison runs in the same process, is warmed up first, and is then timed in
rounds whose order rotates, so order favours none; a side's figure is its median round.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch

from wartune.engine.data import TensorDataset, load_dataset

Side = Callable[[], None]  # runs the measured work once


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@cache
def _synthetic(name: str) -> TensorDataset:
    return load_dataset(name)


def synthetic_slice(n_train: int, n_test: int = 256, name: str = "synthetic-cifar10") -> TensorDataset:
    """The first examples of a synthetic set (`wartune.engine.data.load_synthetic`): its shape and threat model.

    The validation split is given (the test slice's images again), so a trainer carves nothing
    and trains on exactly `n_train` images: random data, where only the cost counts.
    """
    full = _synthetic(name)
    test_x, test_y = full.test_x[:n_test], full.test_y[:n_test]
    return TensorDataset(full.info, full.train_x[:n_train], full.train_y[:n_train], test_x, test_y, val_x=test_x, val_y=test_y)


def median_seconds(
    sides: dict[str, Side], rounds: int, device: torch.device, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Each side warmed up once, then `rounds` rounds in rotating order; the median round's seconds.

    `clock` is wall time by default; single-threaded CPU sides on a shared machine are better
    timed by `time.thread_time` (the CPU time this thread got, not the time it waited for it).
    """
    for run in sides.values():
        run()
    sync(device)
    names = list(sides)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            sync(device)
            start = clock()
            sides[name]()
            sync(device)
            seconds[name].append(clock() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def record(path: Path | None, script: str, figures: dict[str, object]) -> None:
    """Append this script's figures as one JSON line (gpu_all.sh gathers them into one table)."""
    if path is not None:
        with path.open("a") as out:
            out.write(json.dumps({"script": script, **figures}) + "\n")
