"""Data: fetching and verifying the files (``sources``) and the LightningDataModules."""

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.fashion_mnist import FASHION_MNIST, FashionMNISTDataModule
from mnist_lit.data.sources import (
    MNIST,
    DataFetchError,
    DatasetSpec,
    ensure_dataset,
    ensure_mnist,
    idx_bytes,
)

__all__ = [
    "FASHION_MNIST",
    "MNIST",
    "DataFetchError",
    "DatasetSpec",
    "FashionMNISTDataModule",
    "MNISTDataModule",
    "ensure_dataset",
    "ensure_mnist",
    "idx_bytes",
]
