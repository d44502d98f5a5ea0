"""Fashion-MNIST (Zalando): MNIST's format and sizes, ten kinds of clothing instead of digits.

A data set is this: a ``DatasetSpec`` made from torchvision's class, a subclass that names it,
and ``conf/data/fashion_mnist.yaml`` (with its own mean and std).
"""

from __future__ import annotations

from typing import ClassVar

import torchvision.datasets

from mnist_lit.data import MNISTDataModule
from mnist_lit.data.download import DatasetSpec

FASHION_MNIST = DatasetSpec.of(
    torchvision.datasets.FashionMNIST,
    name="fashion_mnist",
    title="Fashion-MNIST",  # in messages (torchvision's class name, FashionMNIST, names the folder)
    # Debian's package repacks the .gz files (other md5s, same content): the content's md5s,
    # from Zalando's README, check it
    md5={
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
    local_gz_dir="/usr/share/datasets/fashion-mnist",
    local_gz_hint="apt-get install dataset-fashion-mnist",
    classes=tuple(torchvision.datasets.FashionMNIST.classes),
    box_size=28,  # Zalando scaled each product so its longer side is 28 px
)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: 60k training images (train/val split as for MNIST), 10k test."""

    spec: ClassVar[DatasetSpec] = FASHION_MNIST
    digits = False
