"""scikit-learn's handwritten digits (1,797 real 8x8 images that ship with the package): no download."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from distillscope.errors import ConfigError
from distillscope.data.base import ImageDataModule, IndexedDataset, compose, TensorImageDataset


def digits_splits(val_fraction: float, test_fraction: float, seed: int):
    """Seeded, stratified train/val/test index split over the 1,797 digits."""
    data = load_digits()
    idx = torch.arange(len(data.target)).numpy()
    train_val, test = train_test_split(idx, test_size=test_fraction, stratify=data.target, random_state=seed)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = train_test_split(
        train_val, test_size=val_share, stratify=data.target[train_val], random_state=seed
    )
    return data, train, val, test


class DigitsDataModule(ImageDataModule):
    num_classes = 10

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        val_fraction: float = 0.15,
        test_fraction: float = 0.2,
        **kwargs,
    ):
        if num_classes != 10:
            raise ConfigError("data.num_classes", f"digits has 10 classes, got {num_classes}", "set data.num_classes=10")
        if in_chans not in (1, 3):
            raise ConfigError("data.in_chans", f"digits are grey, got in_chans={in_chans}", "use 1, or 3 to repeat the channel")
        kwargs.setdefault("mean", (0.3049,) * in_chans)  # mean/std of the resized [0, 1] training pixels
        kwargs.setdefault("std", (0.3234,) * in_chans)
        super().__init__(**kwargs)
        self.in_chans = in_chans
        self.val_fraction, self.test_fraction = val_fraction, test_fraction

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        data, train, val, test = digits_splits(self.val_fraction, self.test_fraction, self.split_seed)
        images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
        images = torch.nn.functional.interpolate(
            images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        images = images.expand(-1, self.in_chans, -1, -1).contiguous()
        labels = torch.tensor(data.target, dtype=torch.long)
        eval_tf = compose(self.normalize())
        train_tf = compose(self.train_augmentation() + self.normalize())

        def subset(ids, tf):
            ids = torch.as_tensor(ids)
            return IndexedDataset(TensorImageDataset(images[ids], labels[ids]), tf)

        self.train_set = subset(train, train_tf)
        self.val_set = subset(val, eval_tf)
        self.test_set = subset(test, eval_tf)
