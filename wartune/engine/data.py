"""Datasets held in memory as tensors, with their adversarial-training defaults.

`digits` (scikit-learn's 8x8 handwritten digits) ships inside an installed package and
is the default: nothing is ever downloaded. MNIST, CIFAR-10/100 and SVHN load through
torchvision from a folder the user names, with ``download=False``. `synthetic-<name>` is
random data of that set's shape and size (`load_synthetic`), for benchmarks and for trying
a GPU cluster before the data is in place.

A `TensorDataset` is a few tensors and a frozen `DatasetInfo`, so it pickles at the cost
of its bytes: a search loads it once on the driver and hands it to every trial through
Ray's object store (the search layer puts it there), and only the driver reads the folder.
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wartune.engine.devices import host_to_device
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
    train_steps: int = 10  # training PGD steps when the config sets none
    eval_examples: int | None = None  # per-epoch evaluation's validation examples when the config sets none (None: all)
    # the validation split carved from the training split when the config sets none: a fraction
    # of it (digits' 1,437 images) or a number of images (`engine/validation.py`)
    validation: float | int = 1_000


DATASETS: dict[str, DatasetInfo] = {
    # ε = 0.2 on [0, 1] pixels: at 0.1 every λ lands at 85-91 % robust and λ stops mattering.
    "digits": DatasetInfo("digits", 1, 8, 10, eps=0.2, step_size=0.05, augment=False, needs_data_dir=False, validation=0.15),
    # Madry et al. / TRADES on MNIST: ε = 0.3, step 0.01, 40 training steps, no augmentation.
    "mnist": DatasetInfo("mnist", 1, 28, 10, eps=0.3, step_size=0.01, augment=False, needs_data_dir=True, train_steps=40,
                         validation=5_000),
    "cifar10": DatasetInfo("cifar10", 3, 32, 10, eps=8 / 255, step_size=0.007, augment=True, needs_data_dir=True, eval_examples=1000),
    "cifar100": DatasetInfo("cifar100", 3, 32, 100, eps=8 / 255, step_size=0.007, augment=True, needs_data_dir=True, eval_examples=1000),
    "svhn": DatasetInfo("svhn", 3, 32, 10, eps=8 / 255, step_size=0.007, augment=False, needs_data_dir=True, eval_examples=1000),
}
SYNTHETIC = "synthetic-"
# (training, test) examples of the real sets, which their synthetic stand-ins copy.
REAL_SIZES: dict[str, tuple[int, int]] = {
    "mnist": (60_000, 10_000), "cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "svhn": (73_257, 26_032),
}  # fmt: skip
# A synthetic set takes its real set's threat model, augmentation and evaluation size: a run on
# it costs what the real run costs. Nothing to read, so no --data-dir.
DATASETS.update(
    {SYNTHETIC + name: dataclasses.replace(DATASETS[name], name=SYNTHETIC + name, needs_data_dir=False) for name in REAL_SIZES}
)


SPLITS = ("validation", "test")


@dataclass
class TensorDataset:
    """Train, validation and test splits as tensors; images are uint8 or float in [0, 1], labels int64.

    As loaded, a dataset has no validation split (`val_x` None): a trainer carves one from the
    training split (`engine/validation.py`). Every choice (best epoch, best λ, ζ) reads the
    validation split; the test split is read once, on the chosen weights.
    """

    info: DatasetInfo
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    val_x: torch.Tensor | None = None
    val_y: torch.Tensor | None = None

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of `validation` or `test`."""
        if name == "test":
            return self.test_x, self.test_y
        if name != "validation":
            raise ValueError(f"unknown split {name!r}; known: {', '.join(SPLITS)}")
        if self.val_x is None or self.val_y is None:
            raise ValueError("this dataset has no validation split: carve one first (engine/validation.py)")
        return self.val_x, self.val_y


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
    if is_synthetic(name):
        return load_synthetic(info)
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


def is_synthetic(name: str) -> bool:
    """Whether a dataset is random stand-in data (its figures measure speed, not robustness)."""
    return name.startswith(SYNTHETIC)


def load_synthetic(info: DatasetInfo) -> TensorDataset:
    """Uniform random uint8 images and labels of the real set's shape and size.

    Seeded by the dataset's name, so every machine and every call makes the same bytes (a
    cluster's nodes and a resumed search agree). Labels are random: nothing is learnable, and
    accuracies stay near chance; only the cost of a run is real.
    """
    n_train, n_test = REAL_SIZES[info.name.removeprefix(SYNTHETIC)]
    g = torch.Generator().manual_seed(zlib.crc32(info.name.encode()))
    shape = (n_train + n_test, info.in_channels, info.image_size, info.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    labels = torch.randint(0, info.num_classes, (n_train + n_test,), generator=g)
    return TensorDataset(info, images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])


def _torchvision_arrays(info: DatasetInfo, root: Path) -> tuple[Any, Any, Any, Any]:
    """(train images NCHW, train labels, test images NCHW, test labels) as torchvision reads them."""
    from torchvision import datasets

    if info.name == "svhn":
        train = datasets.SVHN(str(root), split="train", download=False)
        test = datasets.SVHN(str(root), split="test", download=False)
        return train.data, train.labels, test.data, test.labels  # already NCHW
    if info.name == "mnist":
        train = datasets.MNIST(str(root), train=True, download=False)
        test = datasets.MNIST(str(root), train=False, download=False)
        return train.data.unsqueeze(1).numpy(), train.targets.numpy(), test.data.unsqueeze(1).numpy(), test.targets.numpy()
    cls = datasets.CIFAR10 if info.name == "cifar10" else datasets.CIFAR100
    train = cls(str(root), train=True, download=False)
    test = cls(str(root), train=False, download=False)
    return train.data.transpose(0, 3, 1, 2), train.targets, test.data.transpose(0, 3, 1, 2), test.targets


def _load_torchvision(info: DatasetInfo, root: Path) -> TensorDataset:
    """Read the torchvision on-disk format and keep images as uint8 NCHW tensors."""
    import numpy as np

    try:
        train_x, train_y, test_x, test_y = _torchvision_arrays(info, root)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DataError(f"{info.name} not found under {str(root)!r}: {err}") from None
    images = [torch.from_numpy(np.ascontiguousarray(x)) for x in (train_x, test_x)]
    labels = [torch.from_numpy(np.asarray(y, dtype=np.int64)) for y in (train_y, test_y)]
    return TensorDataset(info, images[0], labels[0], images[1], labels[1])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] as float32, whatever they are stored as."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    return images.float()


def on_device(data: TensorDataset, device: torch.device) -> TensorDataset:
    """The training and validation splits moved to `device` as stored (uint8 stays uint8:
    CIFAR-10's train split is 150 MB); the test split stays where it is.

    A trial then draws every batch there, with no host-to-device copy per step. The test split
    is read once, at the trial's end, a batch at a time: it is not touched before.
    """
    moved = {name: getattr(data, name).to(device) for name in ("train_x", "train_y", "val_x", "val_y")
             if getattr(data, name) is not None}  # fmt: skip
    return dataclasses.replace(data, **moved)


PAD = 4


def augment_batch(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 4-pixel-zero-padded crop and horizontal flip, as TRADES' `RandomCrop(32, padding=4)`.

    The offsets and flips are drawn on the CPU `generator` (x offsets, y offsets, flips, in
    that order) and then moved, so a CPU and a GPU run crop alike.
    """
    n = images.shape[0]
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    device = images.device
    return crop_and_flip(images, host_to_device(dx, device), host_to_device(dy, device), host_to_device(flip, device))


def crop_and_flip(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Each image padded by `PAD` zeros, cropped at (dy, dx) to its own size, and mirrored where `flip`.

    One gather for the whole batch, on the images' device and in their dtype (no loop over
    images); a flip is the crop's columns read right to left.
    """
    n, c, h, w = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (PAD, PAD, PAD, PAD))
    rows = dy[:, None] + torch.arange(h, device=device)
    cols = dx[:, None] + torch.arange(w, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def training_subset(data: TensorDataset, examples: int | None) -> TensorDataset:
    """The training split cut to `examples` images (`TrainingSettings.train_examples`), the other splits whole.

    Deterministic and class-balanced, so every trial and seed trains on the same images: the
    classes take turns, each giving its next image in the file's order, and the chosen images
    keep that order. With `examples` None or at least the split's size, the data as they are.
    """
    labels = data.train_y.cpu()
    if examples is None or examples >= len(labels):
        return data
    rank = torch.empty_like(labels)  # each image's place among its class's images
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        rank[members] = torch.arange(len(members))
    turns = torch.argsort(rank * (int(labels.max()) + 1) + labels, stable=True)
    chosen = turns[:examples].sort().values.to(data.train_y.device)
    return dataclasses.replace(data, train_x=data.train_x[chosen], train_y=data.train_y[chosen])
