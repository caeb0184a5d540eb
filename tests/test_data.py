"""Datasets: the embedded digits split and the local-folder rule for CIFAR / SVHN."""

import pytest
import torch

from wartune.engine.batches import eval_batches, train_batches
from wartune.engine.data import TensorDataset, augment_batch, dataset_info, load_dataset, to_float
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


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_local_datasets_need_a_data_dir(name):
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset(name)


def test_missing_cifar_files_are_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_dataset("cifar10", tmp_path)


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DataError, match="digits, cifar10, cifar100, svhn"):
        load_dataset("mnist")


def test_augment_keeps_shape_and_range():
    x = torch.rand(5, 3, 32, 32)
    out = augment_batch(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


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
