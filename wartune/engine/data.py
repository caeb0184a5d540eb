"""Datasets held in memory as tensors, with their adversarial-training defaults.

`digits` (scikit-learn's 8x8 handwritten digits) ships inside an installed package and
is the default: nothing is ever downloaded. CIFAR-10/100 and SVHN load through
torchvision from a folder the user names, with ``download=False``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from wartune.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """Shape, classes and the threat model the dataset is attacked under by default."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    eps: float
    step_size: float
    augment: bool  # random crop + horizontal flip during training (CIFAR only)
    needs_data_dir: bool


DATASETS: dict[str, DatasetInfo] = {
    # ε = 0.2 on [0, 1] pixels: at 0.1 every λ lands at 85-91 % robust and λ stops mattering.
    "digits": DatasetInfo("digits", 1, 8, 10, eps=0.2, step_size=0.05, augment=False, needs_data_dir=False),
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, eps=8 / 255, step_size=0.007, augment=True, needs_data_dir=True),
    "cifar100": DatasetInfo("cifar100", 3, 32, 100, eps=8 / 255, step_size=0.007, augment=True, needs_data_dir=True),
    "svhn": DatasetInfo("svhn", 3, 32, 10, eps=8 / 255, step_size=0.007, augment=False, needs_data_dir=True),
}


@dataclass
class TensorDataset:
    """Train and test splits as tensors; images are uint8 or float in [0, 1], labels int64."""

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def dataset_info(name: str) -> DatasetInfo:
    """Look a dataset up by name; an unknown one is a user error naming the known ones."""
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


def check_data_dir(name: str, data_dir: Path | None) -> None:
    """Fail early (before any output is written) when a dataset needs a folder it lacks."""
    info = dataset_info(name)
    if not info.needs_data_dir:
        return
    if data_dir is None:
        raise DataError(f"dataset {name!r} loads from a local folder: pass --data-dir (nothing is downloaded)")
    if not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {str(data_dir)!r} is not a folder")


def load_dataset(name: str, data_dir: Path | str | None = None) -> TensorDataset:
    """Load a dataset by name into memory."""
    info = dataset_info(name)
    path = Path(data_dir) if data_dir is not None else None
    check_data_dir(name, path)
    if name == "digits":
        return _load_digits(info)
    assert path is not None
    return _load_torchvision(info, path)


def _load_digits(info: DatasetInfo) -> TensorDataset:
    """1,797 images, 16 grey levels scaled to [0, 1]; a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        range(len(labels)), test_size=0.2, random_state=0, stratify=bunch.target
    )
    train_idx_t, test_idx_t = torch.tensor(train_idx), torch.tensor(test_idx)
    return TensorDataset(info, images[train_idx_t], labels[train_idx_t], images[test_idx_t], labels[test_idx_t])


def _load_torchvision(info: DatasetInfo, root: Path) -> TensorDataset:
    """Read the torchvision on-disk format and keep images as uint8 NCHW tensors."""
    import numpy as np
    from torchvision import datasets

    try:
        if info.name == "svhn":
            train = datasets.SVHN(str(root), split="train", download=False)
            test = datasets.SVHN(str(root), split="test", download=False)
            arrays = (train.data, train.labels, test.data, test.labels)  # already NCHW
        else:
            cls = datasets.CIFAR10 if info.name == "cifar10" else datasets.CIFAR100
            train = cls(str(root), train=True, download=False)
            test = cls(str(root), train=False, download=False)
            arrays = (
                train.data.transpose(0, 3, 1, 2),
                train.targets,
                test.data.transpose(0, 3, 1, 2),
                test.targets,
            )
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DataError(f"{info.name} not found under {str(root)!r}: {err}") from None
    train_x, train_y, test_x, test_y = (np.ascontiguousarray(a) for a in arrays)
    return TensorDataset(
        info,
        torch.from_numpy(train_x),
        torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        torch.from_numpy(test_x),
        torch.from_numpy(np.asarray(test_y, dtype=np.int64)),
    )


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as float32, whatever they are stored as."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def augment_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-padded crop and horizontal flip, as in TRADES' CIFAR training."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=generator).tolist()
    dy = torch.randint(0, 9, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out
