"""Feeding a model: shuffled, augmented training minibatches and in-order evaluation batches.

Both yield float images in [0, 1] and int64 labels on the device. A trial keeps its splits
on its device (`data.on_device`), so a batch is indexed, cropped and converted there; data
left on the host is indexed there and copied per batch. The training order and
augmentation draw from the trainer's own CPU generator, in this order: one permutation per
epoch, then each batch's crop offsets and flips, so a resumed run that restores the
generator sees the same batches, on any device.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from wartune.engine.data import TensorDataset, augment_batch, to_float
from wartune.engine.devices import host_to_device

Batch = tuple[torch.Tensor, torch.Tensor]


def train_batches(
    data: TensorDataset, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[Batch]:
    """One epoch of shuffled minibatches of the training split (augmented where the dataset is)."""
    order = host_to_device(torch.randperm(len(data.train_y), generator=generator), data.train_x.device)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        x = data.train_x[idx]
        if data.info.augment:
            x = augment_batch(x, generator)
        yield to_float(x.to(device)), data.train_y[idx].to(device)


def eval_batches(
    data: TensorDataset, max_examples: int | None, batch_size: int, device: torch.device, split: str = "test"
) -> Iterator[Batch]:
    """The first `max_examples` examples of `split` (all when None), in order, never augmented."""
    images, labels = data.split(split)
    n = min(len(labels), max_examples or len(labels))
    for start in range(0, n, batch_size):
        end = min(start + batch_size, n)
        yield to_float(images[start:end].to(device)), labels[start:end].to(device)
