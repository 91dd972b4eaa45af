"""Shared data pieces: index-carrying datasets, augmentation, and the DataModule base."""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from distillscope.data.replay import ReplayAugmentation


class IndexedDataset(Dataset):
    """Wraps a dataset of (x, y) so batches are (x, y, index): memory banks and teacher caches key on it."""

    def __init__(self, dataset: Dataset, transform=None):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        x, y = self.dataset[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, int(y), index


class TensorImageDataset(Dataset):
    """Images already as a float tensor (N, C, H, W), labels as a long tensor."""

    def __init__(self, images: Tensor, labels: Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.images[index], self.labels[index]


def compose(ops: list):
    """v2.Compose that accepts an empty list (no transform at all)."""
    return v2.Compose(ops) if ops else None


def build_augmentation(image_size: int, crop_padding: int = 0, hflip: bool = False) -> list:
    """Random-crop-with-padding and horizontal flip: the CIFAR recipe, each switchable from config."""
    ops: list = []
    if crop_padding > 0:
        ops.append(v2.RandomCrop(image_size, padding=crop_padding, padding_mode="reflect"))
    if hflip:
        ops.append(v2.RandomHorizontalFlip())
    return ops


class ImageDataModule(L.LightningDataModule):
    """Common loaders; subclasses fill `self.train_set/val_set/test_set` (IndexedDataset) in setup()."""

    num_classes: int
    in_chans: int

    def __init__(
        self,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        image_size: int = 32,
        crop_padding: int = 0,
        hflip: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int = 0,
        split_seed: int = 42,
    ):
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.image_size = image_size
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.mean, self.std = mean, std
        self.seed = seed  # training randomness (augmentation draws); follows the run's seed
        # Fixed apart from `seed`: runs of different seeds, and the teacher, must share one test split.
        self.split_seed = split_seed
        self.train_set = self.val_set = self.test_set = None
        self.batch_augmentation: ReplayAugmentation | None = None

    def use_batch_augmentation(self, num_draws: int | None = None) -> ReplayAugmentation:
        """Move random crop/flip out of the per-sample transforms into one seeded, replayable op applied
        to whole batches once they are on the device (`num_draws` distinct draws per sample, for a
        teacher cache; None: a fresh draw every epoch). Call before setup()."""
        if self.train_set is not None:
            raise RuntimeError("use_batch_augmentation() must be called before setup()")
        self.batch_augmentation = ReplayAugmentation(self.crop_padding, self.hflip, self.seed, num_draws)
        return self.batch_augmentation

    def normalize(self) -> list:
        return [v2.Normalize(list(self.mean), list(self.std))] if self.mean is not None else []

    def train_augmentation(self) -> list:
        if self.batch_augmentation is not None:
            return []  # applied per batch in on_after_batch_transfer
        return build_augmentation(self.image_size, self.crop_padding, self.hflip)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if self.batch_augmentation is None or self.trainer is None or not self.trainer.training:
            return batch
        x, y, index = batch
        return self.batch_augmentation(x, index, self.trainer.current_epoch), y, index

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, train=False)

    def sample_batch(self, n: int = 8) -> tuple[Tensor, Tensor, Tensor]:
        """A few validation samples, for the dry forward pass that checks shapes before training."""
        if self.val_set is None:
            self.setup("fit")
        items = [self.val_set[i] for i in range(min(n, len(self.val_set)))]
        x = torch.stack([it[0] for it in items])
        y = torch.tensor([it[1] for it in items])
        return x, y, torch.tensor([it[2] for it in items])
