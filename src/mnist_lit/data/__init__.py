"""Data: getting the files (``download``, ``offline``) and the LightningDataModules."""

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.download import (
    DATASETS,
    MNIST,
    DatasetSpec,
    ensure_dataset,
    ensure_mnist,
    register_dataset,
)
from mnist_lit.data.fashion_mnist import FASHION_MNIST, FashionMNISTDataModule
from mnist_lit.data.offline import WheelSource, idx_bytes

__all__ = [
    "DATASETS",
    "FASHION_MNIST",
    "MNIST",
    "DatasetSpec",
    "FashionMNISTDataModule",
    "MNISTDataModule",
    "WheelSource",
    "ensure_dataset",
    "ensure_mnist",
    "idx_bytes",
    "register_dataset",
]
