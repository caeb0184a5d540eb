"""Datasets: the embedded digits split, the real MNIST, and the local-folder rule for MNIST / CIFAR / SVHN."""

import pickle

import pytest
import torch

from wartune.engine.batches import eval_batches, train_batches
from wartune.engine.data import (
    TensorDataset,
    augment_batch,
    crop_and_flip,
    dataset_info,
    load_dataset,
    on_device,
    to_float,
    training_subset,
)
from wartune.errors import DataError


def test_digits_is_in_memory_scaled_and_split_stratified(digits):
    assert digits.train_x.shape == (1437, 1, 8, 8) and digits.test_x.shape == (360, 1, 8, 8)
    assert digits.train_x.min() >= 0 and digits.train_x.max() <= 1
    assert digits.info.num_classes == 10 and digits.info.eps == 0.2
    counts = torch.bincount(digits.test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_digits_split_is_fixed():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.train_y, b.train_y)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "svhn"])
def test_local_datasets_need_a_data_dir(name):
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset(name)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_files_are_a_one_line_error_naming_the_folder(name, tmp_path):
    with pytest.raises(DataError, match=f"^{name} not found under '{tmp_path}'") as err:
        load_dataset(name, tmp_path)
    assert "\n" not in str(err.value)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError, match="digits, mnist, cifar10, cifar100, svhn"):
        load_dataset("imagenet")


def test_mnist_loads_the_real_files_as_uint8_in_torchvisions_layout(mnist_dir):
    mnist = load_dataset("mnist", mnist_dir)
    assert mnist.train_x.shape == (60_000, 1, 28, 28) and mnist.test_x.shape == (10_000, 1, 28, 28)
    assert mnist.train_x.dtype == torch.uint8 and mnist.train_y.dtype == torch.int64
    assert mnist.train_y[:5].tolist() == [5, 0, 4, 1, 9] and mnist.test_y[:5].tolist() == [7, 2, 1, 0, 4]
    assert mnist.info.name == "mnist" and not mnist.info.augment


def test_a_dataset_pickles_at_the_cost_of_its_tensors(digits):
    # it travels to every trial through Ray's object store: bytes, not Python objects per pixel
    tensors = (digits.train_x, digits.train_y, digits.test_x, digits.test_y)
    size = sum(t.numel() * t.element_size() for t in tensors)
    copy = pickle.loads(pickle.dumps(digits))
    assert len(pickle.dumps(digits)) < 1.05 * size + 10_000
    assert copy.info == digits.info and torch.equal(copy.train_x, digits.train_x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_augment_keeps_shape_dtype_and_range(dtype):
    x = torch.randint(0, 256, (5, 3, 32, 32), generator=torch.Generator().manual_seed(1)).to(dtype)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype and out.min() >= 0 and out.max() <= 255


def _crop_and_flip_one_by_one(images, dx, dy, flip):
    """TRADES' RandomCrop(padding=4) + RandomHorizontalFlip, one image at a time."""
    h, w = images.shape[-2:]
    out = []
    for image, x0, y0, mirror in zip(images, dx.tolist(), dy.tolist(), flip.tolist(), strict=True):
        crop = torch.nn.functional.pad(image, (4, 4, 4, 4))[:, y0 : y0 + h, x0 : x0 + w]
        out.append(crop.flip(-1) if mirror else crop)
    return torch.stack(out)


def test_crop_and_flip_equals_the_per_image_reference_with_known_offsets():
    images = torch.arange(1, 3 * 16 + 1, dtype=torch.float32).reshape(3, 1, 4, 4)
    dx, dy, flip = torch.tensor([4, 1, 6]), torch.tensor([4, 3, 5]), torch.tensor([False, True, True])
    out = crop_and_flip(images, dx, dy, flip)
    assert torch.equal(out, _crop_and_flip_one_by_one(images, dx, dy, flip))
    assert torch.equal(out[0], images[0])  # offset (4, 4) is the unpadded image
    # image 1 (values 17-32), crop at y=3, x=1: a padding row, then rows 0-2; of the columns only
    # the image's column 0 falls in the crop, at its right edge; flipped, at its left
    assert torch.equal(out[1, 0], torch.tensor([[0, 0, 0, 0], [17, 0, 0, 0], [21, 0, 0, 0], [25, 0, 0, 0]], dtype=torch.float32))
    # image 2, crop at y=5, x=6: rows 1-3 then a padding row, columns 2-3 then two padding columns; flipped
    assert torch.equal(out[2, 0], torch.tensor([[0, 0, 40, 39], [0, 0, 44, 43], [0, 0, 48, 47], [0, 0, 0, 0]], dtype=torch.float32))


def test_augment_draws_x_offsets_then_y_offsets_then_flips():
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    generator = torch.Generator().manual_seed(5)
    dx, dy, flip = torch.randint(0, 9, (6,), generator=generator), torch.randint(0, 9, (6,), generator=generator), torch.rand(6, generator=generator) < 0.5
    out = augment_batch(images, torch.Generator().manual_seed(5))
    assert torch.equal(out, _crop_and_flip_one_by_one(images, dx, dy, flip))


def test_on_device_keeps_the_stored_dtypes(digits):
    images = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    data = on_device(TensorDataset(dataset_info("cifar10"), images, torch.arange(4), images, torch.arange(4)), torch.device("cpu"))
    assert data.train_x.dtype == torch.uint8 and data.info.name == "cifar10"
    assert on_device(digits, torch.device("cpu")).train_x.dtype == torch.float32


CPU = torch.device("cpu")


def test_train_batches_cover_the_split_once_in_the_generators_order(digits):
    batches = list(train_batches(digits, 500, torch.Generator().manual_seed(4), CPU))
    assert [len(y) for _, y in batches] == [500, 500, 437]
    order = torch.randperm(1437, generator=torch.Generator().manual_seed(4))
    assert torch.equal(torch.cat([x for x, _ in batches]), digits.train_x[order])
    assert torch.equal(torch.cat([y for _, y in batches]), digits.train_y[order])


def test_train_batches_shuffle_then_augment_from_the_one_generator():
    # the order of draws is part of the resume contract: permutation first, then each batch's crops
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = TensorDataset(dataset_info("cifar10"), images, torch.arange(10), images[:2], torch.arange(2))
    [(x, y)] = train_batches(data, 16, torch.Generator().manual_seed(7), CPU)
    generator = torch.Generator().manual_seed(7)
    order = torch.randperm(10, generator=generator)
    assert torch.equal(y, order)
    assert torch.equal(x, augment_batch(to_float(images[order]), generator))


def test_eval_batches_are_the_first_examples_in_order(digits):
    batches = list(eval_batches(digits, 300, 256, CPU))
    assert [len(y) for _, y in batches] == [256, 44]
    assert torch.equal(torch.cat([x for x, _ in batches]), digits.test_x[:300])
    assert sum(len(y) for _, y in eval_batches(digits, None, 256, CPU)) == 360


@pytest.mark.parametrize(
    "name,train,test,shape,classes",
    [
        ("synthetic-cifar10", 50_000, 10_000, (3, 32, 32), 10),
        ("synthetic-cifar100", 50_000, 10_000, (3, 32, 32), 100),
        ("synthetic-svhn", 73_257, 26_032, (3, 32, 32), 10),
        ("synthetic-mnist", 60_000, 10_000, (1, 28, 28), 10),
    ],
)
def test_synthetic_data_has_the_real_sets_shape_size_and_threat_model_and_needs_no_folder(name, train, test, shape, classes):
    data = load_dataset(name)  # no --data-dir: nothing to read
    assert data.train_x.shape == (train, *shape) and data.test_x.shape == (test, *shape)
    assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.int64
    assert int(data.train_y.min()) == 0 and int(data.train_y.max()) == classes - 1
    real = dataset_info(name.removeprefix("synthetic-"))
    info = data.info
    assert (info.eps, info.step_size, info.augment, info.train_steps, info.eval_examples) == (
        real.eps, real.step_size, real.augment, real.train_steps, real.eval_examples
    )  # fmt: skip
    assert info.name == name and not info.needs_data_dir


def test_synthetic_data_is_the_same_bytes_on_every_call_and_differs_between_sets():
    a, b = load_dataset("synthetic-cifar10"), load_dataset("synthetic-cifar10")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x[:100], load_dataset("synthetic-cifar100").train_x[:100])


def test_a_training_subset_is_fixed_class_balanced_and_in_file_order(digits):
    sub = training_subset(digits, 105)
    assert len(sub.train_y) == 105 and torch.equal(sub.test_y, digits.test_y)
    assert torch.bincount(sub.train_y).tolist() == [11] * 5 + [10] * 5  # the classes take turns
    # each class's first images in the file's order, kept in that order
    for label in range(10):
        mine = sub.train_x[sub.train_y == label]
        assert torch.equal(mine, digits.train_x[digits.train_y == label][: len(mine)])
    assert torch.equal(training_subset(digits, 105).train_x, sub.train_x)
    assert training_subset(digits, None) is digits and training_subset(digits, 10**6) is digits


def test_a_trainer_trains_on_the_configured_subset(digits, tiny_config):
    from wartune.engine.trainer import Trainer

    trainer = Trainer(tiny_config.model_copy(update={"train_examples": 200}), digits)
    assert len(trainer.data.train_y) == 200
    trace, _ = trainer.train_epoch()
    assert len(trace.l_nat) == 2  # ceil(200 / 128) steps
