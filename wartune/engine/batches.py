"""Feeding a model: shuffled, augmented training minibatches and in-order evaluation batches.

Both yield float images in [0, 1] and int64 labels, already on the device. The training
order and augmentation draw from the trainer's own generator, in this order: one
permutation per epoch, then each batch's crop offsets and flips, so a resumed run that
restores the generator sees the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from wartune.engine.data import TensorDataset, augment_batch, to_float

Batch = tuple[torch.Tensor, torch.Tensor]


def train_batches(
    data: TensorDataset, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[Batch]:
    """One epoch of shuffled minibatches of the training split (augmented where the dataset is)."""
    order = torch.randperm(len(data.train_y), generator=generator)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = to_float(data.train_x[idx])
        if data.info.augment:
            x = augment_batch(x, generator)
        yield x.to(device), data.train_y[idx].to(device)


def eval_batches(
    data: TensorDataset, max_examples: int | None, batch_size: int, device: torch.device
) -> Iterator[Batch]:
    """The first `max_examples` test examples (all when None), in order, never augmented."""
    n = min(len(data.test_y), max_examples or len(data.test_y))
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        yield to_float(data.test_x[start:end]).to(device), data.test_y[start:end].to(device)
