"""Fashion-MNIST (Zalando): MNIST's format and sizes, ten kinds of clothing instead of digits.

The whole data set is this spec and a subclass that names it; ``conf/data/fashion_mnist.yaml``
adds its own mean and std. A third MNIST-like set (KMNIST, EMNIST digits) is the same three
things.
"""

from __future__ import annotations

from typing import ClassVar

import torchvision.datasets

from mnist_lit.data.datamodule import MNISTDataModule
from mnist_lit.data.download import DatasetSpec, gz_md5s, register_dataset

FASHION_MNIST = register_dataset(
    DatasetSpec(
        name="fashion_mnist",
        title="Fashion-MNIST",
        # where torchvision's ``FashionMNIST`` looks too
        raw_subdir="FashionMNIST/raw",
        # md5 of the uncompressed files, computed from Debian's dataset-fashion-mnist; they are
        # the ones Zalando's README lists
        md5={
            "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
            "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
            "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
        },
        # Debian's .gz files are repacked: other md5s than these official ones, same content
        gz_md5=gz_md5s(torchvision.datasets.FashionMNIST),
        mirrors=tuple(torchvision.datasets.FashionMNIST.mirrors),
        local_gz_dir="/usr/share/datasets/fashion-mnist",
        local_gz_hint="apt-get install dataset-fashion-mnist",
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        # Zalando scaled each product so its longer side is 28 px: it fills the field
        box_size=28,
    )
)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: 60k training images (train/val split as for MNIST), 10k test.

    Pass its own ``mean=0.2860, std=0.3530`` (``conf/data/fashion_mnist.yaml`` does): the
    defaults are MNIST's.
    """

    spec: ClassVar[DatasetSpec] = FASHION_MNIST
