"""CIFAR-10/100 through torchvision (its on-disk format; `download=true` fetches it once)."""

from __future__ import annotations

import torch
from torchvision import datasets
from torchvision.transforms import v2

from distillscope.data.base import ImageDataModule, IndexedDataset, compose
from distillscope.errors import ConfigError

_STATS = {
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _without_checksums(cls: type[datasets.CIFAR10]) -> type[datasets.CIFAR10]:
    """The same torchvision loader, checking only that the files exist (md5=None).

    For copies re-packed by the user, and for the tests, which write small files in CIFAR's format.
    """
    return type(
        f"Unverified{cls.__name__}",
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


class CIFARDataModule(ImageDataModule):
    in_chans = 3

    def __init__(
        self,
        data_dir: str = "data",
        num_classes: int = 100,
        in_chans: int = 3,
        download: bool = False,
        val_fraction: float = 0.0,
        verify_checksums: bool = True,
        **kwargs,
    ):
        if num_classes not in _STATS:
            raise ConfigError("data.num_classes", f"CIFAR has 10 or 100 classes, got {num_classes}", "use data=cifar10 or data=cifar100")
        if in_chans != 3:
            raise ConfigError("data.in_chans", f"CIFAR images are RGB, got in_chans={in_chans}", "set data.in_chans=3")
        mean, std = _STATS[num_classes]
        kwargs.setdefault("mean", mean)
        kwargs.setdefault("std", std)
        kwargs.setdefault("crop_padding", 4)
        kwargs.setdefault("hflip", True)
        super().__init__(**kwargs)
        self.data_dir, self.num_classes, self.download = data_dir, num_classes, download
        self.val_fraction = val_fraction
        self.verify_checksums = verify_checksums

    def _dataset(self, train: bool):
        cls = datasets.CIFAR10 if self.num_classes == 10 else datasets.CIFAR100
        if not self.verify_checksums:
            cls = _without_checksums(cls)
        try:
            return cls(self.data_dir, train=train, download=self.download)
        except RuntimeError as exc:
            raise ConfigError("data.data_dir", f"no CIFAR-{self.num_classes} in {self.data_dir} ({exc})", "set data.download=true (needs internet) or point data.data_dir at an extracted copy") from exc

    def prepare_data(self) -> None:
        if self.download:
            self._dataset(True), self._dataset(False)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        to_tensor = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
        train_tf = compose(to_tensor + self.train_augmentation() + self.normalize())
        eval_tf = compose(to_tensor + self.normalize())
        train_full, test = self._dataset(True), self._dataset(False)
        if self.val_fraction > 0:
            # A held-out slice of the training set; the official test split stays untouched.
            perm = torch.randperm(len(train_full), generator=torch.Generator().manual_seed(self.split_seed))
            n_val = int(len(train_full) * self.val_fraction)
            val_ids, train_ids = perm[:n_val].tolist(), perm[n_val:].tolist()
            self.train_set = IndexedDataset(torch.utils.data.Subset(train_full, train_ids), train_tf)
            self.val_set = IndexedDataset(torch.utils.data.Subset(train_full, val_ids), eval_tf)
        else:
            # The KD literature (RepDistiller) reports on the test split and validates on it too.
            self.train_set = IndexedDataset(train_full, train_tf)
            self.val_set = IndexedDataset(test, eval_tf)
        self.test_set = IndexedDataset(test, eval_tf)
