"""The data module on real MNIST: the official sizes, a fixed split, MNIST's own statistics.

(The split, batches, sampler and resuming on synthetic files: ``tests/unit/test_datamodule.py``.)
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from mnist_lit.data import MNISTDataModule


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
    assert dm.hparams.dataset == "mnist"


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


def test_batches_have_zero_mean_and_unit_std_with_mnists_own_statistics(
    mnist_data_dir: Path,
) -> None:
    dm = make_datamodule(mnist_data_dir, batch_size=2000)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2000, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (2000,) and labels.dtype == torch.int64
    assert abs(images.mean().item()) < 0.05
    assert abs(images.std().item() - 1.0) < 0.05


def test_loader_covers_every_sample_once_per_epoch(mnist_data_dir: Path) -> None:
    dm = make_datamodule(mnist_data_dir, batch_size=1000)
    loader = dm.val_dataloader()
    assert len(loader) == 5
    seen = torch.cat([labels for _, labels in loader])
    assert torch.equal(seen, dm.splits["val"][1])  # unshuffled: the split's own order


def test_data_module_gives_each_rank_its_share(mnist_data_dir: Path) -> None:
    """The loaders of every split take the rank and world size from the trainer."""
    data = MNISTDataModule(data_dir=str(mnist_data_dir), batch_size=500)
    data.setup("fit")
    for rank in (0, 1):
        cpu = SimpleNamespace(root_device=torch.device("cpu"))  # where data.on_device puts it
        data.trainer = SimpleNamespace(global_rank=rank, world_size=2, strategy=cpu)
        for loader, size in (
            (data.train_dataloader(), 55_000),
            (data.val_dataloader(), 5_000),
            (data.test_dataloader(), 10_000),
        ):
            assert (loader.sampler.rank, loader.sampler.world_size) == (rank, 2)
            assert len(loader.sampler) == size // 2
