"""Datasets: the embedded digits split and the local-folder rule for CIFAR / SVHN."""

import pytest
import torch

from wartune.engine.data import augment_batch, load_dataset
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
