"""The data module on real MNIST: split sizes, a fixed split, normalization, batch order."""

from __future__ import annotations

from pathlib import Path

import torch

from mnist_lit.data import MNISTDataModule
from mnist_lit.data.datamodule import EpochShuffleSampler


def make_datamodule(data_dir: Path, **kwargs) -> MNISTDataModule:
    datamodule = MNISTDataModule(data_dir=str(data_dir), **kwargs)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_official_sizes_and_default_split(mnist_data_dir: Path) -> None:
    dm = make_datamodule(mnist_data_dir)
    sizes = {split: len(images) for split, (images, _) in dm.splits.items()}
    assert sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert dm.splits["train"][0].dtype == torch.uint8
    assert dm.splits["train"][0].shape[1:] == (28, 28)
    assert set(dm.splits["test"][1].unique().tolist()) == set(range(10))


def test_split_is_fixed_by_split_seed_and_disjoint(mnist_data_dir: Path) -> None:
    first, again = make_datamodule(mnist_data_dir), make_datamodule(mnist_data_dir)
    assert torch.equal(first.splits["val"][0], again.splits["val"][0])
    other = make_datamodule(mnist_data_dir, split_seed=7)
    assert not torch.equal(first.splits["val"][0], other.splits["val"][0])
    # train and val do not share images (compare as bytes; MNIST has no exact duplicates)
    train = {bytes(img.numpy()) for img in first.splits["train"][0][:5000]}
    assert not any(bytes(img.numpy()) in train for img in first.splits["val"][0])


def test_val_size_is_configurable(mnist_data_dir: Path) -> None:
    dm = make_datamodule(mnist_data_dir, val_size=10_000)
    assert len(dm.splits["val"][0]) == 10_000
    assert len(dm.splits["train"][0]) == 50_000


def test_batches_are_normalized_float_images(mnist_data_dir: Path) -> None:
    dm = make_datamodule(mnist_data_dir, batch_size=2000)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (2000,) and labels.dtype == torch.int64
    # with MNIST's own mean and std, a large batch is close to zero mean, unit std
    assert abs(images.mean().item()) < 0.05
    assert abs(images.std().item() - 1.0) < 0.05


def test_loader_covers_every_sample_once_per_epoch(mnist_data_dir: Path) -> None:
    dm = make_datamodule(mnist_data_dir, batch_size=1000)
    loader = dm.val_dataloader()
    assert len(loader) == 5
    seen = torch.cat([labels for _, labels in loader])
    assert torch.equal(seen, dm.splits["val"][1])  # unshuffled: the split's own order


def test_shuffle_depends_on_seed_and_epoch_only() -> None:
    sampler = EpochShuffleSampler(100, shuffle=True, seed=3)
    sampler.set_epoch(0)
    epoch0 = sampler.indices()
    sampler.set_epoch(1)
    epoch1 = sampler.indices()
    resumed = EpochShuffleSampler(100, shuffle=True, seed=3)
    resumed.set_epoch(1)
    assert not torch.equal(epoch0, epoch1)
    assert torch.equal(epoch1, resumed.indices())  # a resumed run sees the same order
    assert sorted(epoch0.tolist()) == list(range(100))


def test_ranks_split_an_epoch_without_overlap() -> None:
    shares = [EpochShuffleSampler(10, True, 0, rank=r, world_size=3).indices() for r in range(3)]
    assert all(len(share) == 4 for share in shares)  # padded to equal length
    assert set(torch.cat(shares).tolist()) == set(range(10))
