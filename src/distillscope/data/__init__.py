"""LightningDataModules whose batches are (images, labels, sample indices)."""

from distillscope.data.base import ImageDataModule, IndexedDataset
from distillscope.data.cifar import CIFARDataModule
from distillscope.data.digits import DigitsDataModule
from distillscope.data.imagefolder import ImageFolderDataModule

__all__ = ["CIFARDataModule", "DigitsDataModule", "ImageDataModule", "ImageFolderDataModule", "IndexedDataset"]
