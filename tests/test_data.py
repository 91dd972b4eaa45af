"""Data modules: digits split, CIFAR and ImageFolder read from files in their real on-disk formats."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_fake_cifar
from distillscope.data import CIFARDataModule, DigitsDataModule, ImageFolderDataModule
from distillscope.errors import ConfigError


def test_digits_split_is_stratified_disjoint_and_fixed_by_split_seed():
    dm = DigitsDataModule(split_seed=3)
    dm.setup()
    sizes = len(dm.train_set), len(dm.val_set), len(dm.test_set)
    assert sum(sizes) == 1797
    assert sizes[2] == pytest.approx(0.2 * 1797, abs=2)

    def ids(ds):
        return {bytes(ds.dataset.images[i].numpy()) for i in range(len(ds))}

    assert not ids(dm.train_set) & ids(dm.test_set)
    test_labels = torch.bincount(dm.test_set.dataset.labels, minlength=10)
    assert test_labels.min() >= 35 and test_labels.max() <= 37  # ~36 of each digit
    # The run's seed must not move the split: a teacher trained under seed 42 would otherwise be
    # tested on its own training images in a seed-1 run.
    again = DigitsDataModule(split_seed=3, seed=99)
    again.setup()
    assert ids(again.test_set) == ids(dm.test_set)
    other = DigitsDataModule(split_seed=4)
    other.setup()
    assert ids(other.test_set) != ids(dm.test_set)


def test_run_seed_leaves_the_configured_split_alone(tmp_path):
    from conftest import compose_cfg

    first, second = (compose_cfg([f"seed={s}"], tmp_path) for s in (1, 2))
    assert first.data.split_seed == second.data.split_seed and first.data.seed != second.data.seed


def test_digits_batches_carry_sample_index_and_32x32_images():
    dm = DigitsDataModule(batch_size=16)
    dm.setup()
    x, y, index = next(iter(dm.val_dataloader()))
    assert x.shape == (16, 1, 32, 32) and y.dtype == torch.long
    assert torch.equal(index, torch.arange(16))
    assert torch.equal(dm.val_set[int(index[5])][0], x[5])


def test_cifar_reads_real_pickle_format(tmp_path):
    write_fake_cifar(tmp_path, 100, n_train=40, n_test=20)
    dm = CIFARDataModule(data_dir=str(tmp_path), num_classes=100, verify_checksums=False, batch_size=8, val_fraction=0.25)
    dm.setup()
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (30, 10, 20)
    x, y, index = next(iter(dm.test_dataloader()))
    assert x.shape == (8, 3, 32, 32)
    assert y.tolist() == list(range(8))  # written as i % 100
    assert index.tolist() == list(range(8))


def test_cifar_missing_files_name_the_key(tmp_path):
    dm = CIFARDataModule(data_dir=str(tmp_path / "nowhere"), num_classes=10)
    with pytest.raises(ConfigError, match="data.data_dir"):
        dm.setup()


def test_imagefolder_reads_png_tree(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in [("train", 3), ("val", 2)]:
        for cls in ["cat", "dog"]:
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    dm = ImageFolderDataModule(root=str(tmp_path), num_classes=2, image_size=32, batch_size=4, hflip=True, crop_padding=2)
    dm.setup()
    assert len(dm.train_set) == 6 and dm.test_set is dm.val_set
    x, y, index = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 32, 32) and set(y.tolist()) <= {0, 1} and len(index) == 4
    with pytest.raises(ConfigError, match="data.num_classes"):
        bad = ImageFolderDataModule(root=str(tmp_path), num_classes=5)
        bad.setup()
