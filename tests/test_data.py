"""Datasets: the embedded digits split, the real MNIST, the local-folder rule for MNIST / CIFAR / SVHN,
and the validation split a trainer carves from the training split."""

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from wartune.engine.batches import eval_batches, train_batches
from wartune.engine.config import TrainConfig, ValidationSettings, validate
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
from wartune.engine.validation import carve_validation, validation_size
from wartune.errors import ConfigError, DataError


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
    """Each image comes back moved by its drawn crop offset (its content 4 - dx columns right and
    4 - dy rows down, zeros where the padding moved in) and mirrored where its flip was drawn; a
    dataset without augmentation is fed its images unchanged. (Zero padding alone keeps the range.)"""
    n, side = 8, 32
    x = torch.randint(1, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(1)).to(dtype)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == dtype and out.min() >= 0 and out.max() <= 255
    generator = torch.Generator().manual_seed(0)  # the draws, in augment_batch's order
    dx = torch.randint(0, 9, (n,), generator=generator).tolist()
    dy = torch.randint(0, 9, (n,), generator=generator).tolist()
    flips = (torch.rand(n, generator=generator) < 0.5).tolist()
    assert any(flips) and not all(flips) and len(set(zip(dx, dy, strict=True))) > 4  # no draw is idle
    for image, moved, right, down, flip in zip(x, out, [4 - d for d in dx], [4 - d for d in dy], flips, strict=True):
        expected = torch.zeros_like(image)
        expected[:, max(down, 0) : side + min(down, 0), max(right, 0) : side + min(right, 0)] = image[
            :, max(-down, 0) : side - max(down, 0), max(-right, 0) : side - max(right, 0)
        ]
        assert torch.equal(moved.flip(-1) if flip else moved, expected)

    labels = torch.arange(n)
    for augment in (False, True):
        data = TensorDataset(dataclasses.replace(dataset_info("cifar10"), augment=augment), x, labels, x[:2], labels[:2])
        [(batch, order)] = train_batches(data, 16, torch.Generator().manual_seed(7), CPU)
        assert torch.equal(batch, to_float(x[order])) is not augment


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
    carved, _ = carve_validation(digits, ValidationSettings())
    moved = on_device(carved, torch.device("cpu"))
    assert torch.equal(moved.val_x, carved.val_x) and torch.equal(moved.val_y, carved.val_y)
    assert moved.test_x is digits.test_x and moved.test_y is digits.test_y  # the test split stays where it is


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
    # the subset is taken from what the validation split left: no validation image is trained on
    assert len(trainer.validation_indices) == 216 and len(trainer.data.val_y) == 216
    left, _ = carve_validation(digits, ValidationSettings())
    assert torch.equal(trainer.data.train_x, training_subset(left, 200).train_x)
    trace, _ = trainer.train_epoch()
    assert len(trace.l_nat) == 2  # ceil(200 / 128) steps


# --- the validation split (engine/validation.py) ---------------------------------------------


def _rows(images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Each image flattened with its label appended, the rows sorted: the split as a multiset."""
    rows = torch.cat([images.flatten(1), labels[:, None].to(images.dtype)], dim=1).numpy()
    return rows[np.lexsort(rows.T[::-1])]


def test_digits_validation_split_is_15_percent_of_training_stratified_and_the_rest_trains(digits):
    carved, held = carve_validation(digits, ValidationSettings())
    assert len(held) == round(0.15 * 1437) == 216
    assert (len(carved.val_y), len(carved.train_y)) == (216, 1221)
    assert torch.equal(held, held.unique())  # sorted, no index twice
    assert 0 <= int(held.min()) and int(held.max()) < 1437
    # stratified: each class's share of the validation split is its share of the training split
    share = torch.bincount(digits.train_y, minlength=10).double() / 1437
    counts = torch.bincount(carved.val_y, minlength=10)
    assert ((counts - 216 * share).abs() <= 1).all(), counts.tolist()
    # the validation images are the held-out training images; the training split is every other
    # one, in its order (so the two are disjoint)
    assert torch.equal(carved.val_x, digits.train_x[held]) and torch.equal(carved.val_y, digits.train_y[held])
    keep = torch.tensor(sorted(set(range(1437)) - set(held.tolist())))
    assert len(keep) == 1221
    assert torch.equal(carved.train_x, digits.train_x[keep]) and torch.equal(carved.train_y, digits.train_y[keep])
    assert torch.equal(torch.cat([held, keep]).sort().values, torch.arange(1437))
    # together, image for image, exactly the training split as loaded
    both = _rows(torch.cat([carved.train_x, carved.val_x]), torch.cat([carved.train_y, carved.val_y]))
    assert np.array_equal(both, _rows(digits.train_x, digits.train_y))
    # the test split is not touched
    assert carved.test_x is digits.test_x and carved.test_y is digits.test_y
    assert digits.val_x is None and len(digits.train_y) == 1437  # the loaded data stay as they were


def test_the_validation_split_is_drawn_by_its_seed(digits):
    _, first = carve_validation(digits, ValidationSettings())
    _, again = carve_validation(digits, ValidationSettings(seed=0))
    _, other = carve_validation(digits, ValidationSettings(seed=1))
    assert torch.equal(first, again)
    assert len(other) == 216 and not torch.equal(first, other)


@pytest.mark.parametrize(
    "settings,count", [({"examples": 50}, 50), ({"fraction": 0.1}, 144), ({"examples": 10}, 10), ({"examples": 1427}, 1427)]
)
def test_the_validation_split_takes_the_configured_count(digits, settings, count):
    # 0.1 * 1437 = 143.7 → 144; 10 and 1,427 leave each of the 10 classes one image on each side
    carved, held = carve_validation(digits, ValidationSettings(**settings))
    assert len(held) == len(carved.val_y) == count and len(carved.train_y) == 1437 - count
    assert len(carved.val_y.unique()) == len(carved.train_y.unique()) == 10


@pytest.mark.parametrize("settings", [{"examples": 9}, {"examples": 1428}, {"examples": 5000}, {"fraction": 0.999}])
def test_a_validation_split_too_small_or_too_large_is_a_one_line_error(digits, settings):
    with pytest.raises(ConfigError, match=r"^validation: \d+ images cannot be held out of 1437 training images of 10 classes") as err:
        carve_validation(digits, ValidationSettings(**settings))
    assert "give validation.examples between 10 and 1427" in str(err.value) and "\n" not in str(err.value)


def test_a_trial_begun_by_0_2_0_validates_on_the_test_split_and_trains_on_all(digits):
    carved, held = carve_validation(digits, ValidationSettings(held_out=False))
    assert carved.val_x is digits.test_x and carved.val_y is digits.test_y
    assert carved.train_x is digits.train_x and carved.train_y is digits.train_y and len(carved.train_y) == 1437
    assert held.numel() == 0


@pytest.mark.parametrize(
    "validation,key,why",
    [
        ({"examples": 0}, "validation.examples", "a validation split needs at least one image per class"),
        ({"examples": -3}, "validation.examples", "a validation split needs at least one image per class"),
        ({"fraction": 0}, "validation.fraction", "a fraction of the training split is above 0 and below 1"),
        ({"fraction": 1.0}, "validation.fraction", "a fraction of the training split is above 0 and below 1"),
        ({"examples": 50, "fraction": 0.1}, "validation.fraction", "give examples or fraction, not both"),
    ],
)
def test_a_config_without_a_usable_validation_split_is_refused_in_one_line(validation, key, why):
    with pytest.raises(ConfigError) as err:
        validate(TrainConfig, {"validation": validation}, "x")
    message = str(err.value)
    assert message.startswith(f"x: {key}: {why}") and "\n" not in message
    if "needs" in why or "above 0" in why:  # why a split is needed at all
        assert "could only be chosen on the test split, which then no longer tests them" in message


@pytest.mark.parametrize(
    "dataset,n_train,count",
    [("digits", 1437, 216), ("mnist", 60_000, 5_000), ("cifar10", 50_000, 1_000), ("cifar100", 50_000, 1_000),
     ("svhn", 73_257, 1_000), ("synthetic-cifar10", 50_000, 1_000), ("synthetic-mnist", 60_000, 5_000)],
)  # fmt: skip
def test_each_datasets_default_validation_size(dataset, n_train, count):
    default = dataset_info(dataset).validation
    assert validation_size(ValidationSettings(), default, n_train) == count
    assert validation_size(ValidationSettings(examples=77), default, n_train) == 77
    assert validation_size(ValidationSettings(fraction=0.5), default, n_train) == round(0.5 * n_train)


def test_a_dataset_names_its_splits_and_has_no_validation_split_until_one_is_carved(digits):
    assert digits.split("test") == (digits.test_x, digits.test_y)
    with pytest.raises(ValueError, match="no validation split: carve one first"):
        digits.split("validation")
    with pytest.raises(ValueError, match="unknown split 'train'; known: validation, test"):
        digits.split("train")
    carved, _ = carve_validation(digits, ValidationSettings())
    assert carved.split("validation") == (carved.val_x, carved.val_y)


def test_eval_batches_read_the_first_examples_of_the_named_split(digits):
    carved, _ = carve_validation(digits, ValidationSettings())
    batches = list(eval_batches(carved, 100, 64, CPU, "validation"))
    assert [len(y) for _, y in batches] == [64, 36]
    assert torch.equal(torch.cat([x for x, _ in batches]), carved.val_x[:100])
    assert torch.equal(torch.cat([y for _, y in batches]), carved.val_y[:100])
    assert sum(len(y) for _, y in eval_batches(carved, None, 256, CPU, "validation")) == 216
    assert sum(len(y) for _, y in eval_batches(carved, None, 256, CPU)) == 360  # the test split by default
