"""A user's own images: `root/train/<class>/*.png`, `root/val/<class>/*`, optional `root/test/<class>/*`."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision import datasets
from torchvision.transforms import v2

from distillscope.data.base import ImageDataModule, IndexedDataset, compose
from distillscope.errors import ConfigError


class ImageFolderDataModule(ImageDataModule):
    def __init__(self, root: str, num_classes: int, in_chans: int = 3, **kwargs):
        kwargs.setdefault("mean", (0.485, 0.456, 0.406)[:in_chans] if in_chans == 3 else (0.5,))
        kwargs.setdefault("std", (0.229, 0.224, 0.225)[:in_chans] if in_chans == 3 else (0.5,))
        super().__init__(**kwargs)
        self.root, self.num_classes, self.in_chans = Path(root), num_classes, in_chans

    def _folder(self, split: str, transform) -> datasets.ImageFolder:
        path = self.root / split
        if not path.is_dir():
            raise ConfigError("data.root", f"no '{split}' folder in {self.root}", "lay images out as root/{train,val}/<class>/<image>")
        loader_mode = "L" if self.in_chans == 1 else "RGB"
        folder = datasets.ImageFolder(path, loader=lambda p: datasets.folder.default_loader(p).convert(loader_mode))
        if len(folder.classes) != self.num_classes:
            raise ConfigError("data.num_classes", f"{path} has {len(folder.classes)} class folders, config says {self.num_classes}", f"set data.num_classes={len(folder.classes)}")
        return IndexedDataset(folder, transform)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        base = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Resize(self.image_size), v2.CenterCrop(self.image_size)]
        train_tf = compose(base + self.train_augmentation() + self.normalize())
        eval_tf = compose(base + self.normalize())
        self.train_set = self._folder("train", train_tf)
        self.val_set = self._folder("val", eval_tf)
        self.test_set = self._folder("test", eval_tf) if (self.root / "test").is_dir() else self.val_set
