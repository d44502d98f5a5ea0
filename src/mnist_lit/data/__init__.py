"""Data: fetching and verifying the files (``sources``) and the LightningDataModule."""

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.sources import DataFetchError, ensure_mnist

__all__ = ["DataFetchError", "MNISTDataModule", "ensure_mnist"]
