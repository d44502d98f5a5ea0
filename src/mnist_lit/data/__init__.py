"""Data: getting the files (``download``, ``offline``), the LightningDataModules, and the
preparation of any image file (``preprocess``).

The names below load with their module on first use, so ``data.preprocess`` (numpy and PIL)
serves an ONNX prediction without importing the data modules, and with them torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

#: each public name and the module that defines it
_SOURCES = {
    "MNISTDataModule": "datamodule",
    "DATASETS": "download",
    "MNIST": "download",
    "DatasetSpec": "download",
    "ensure_dataset": "download",
    "ensure_mnist": "download",
    "register_dataset": "download",
    "FASHION_MNIST": "fashion_mnist",
    "FashionMNISTDataModule": "fashion_mnist",
    "WheelSource": "offline",
    "idx_bytes": "offline",
}

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


def __getattr__(name: str) -> Any:
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name == "DATASETS":  # every data set registers itself when its module loads
        importlib.import_module(f"{__name__}.fashion_mnist")
    return getattr(importlib.import_module(f"{__name__}.{_SOURCES[name]}"), name)
