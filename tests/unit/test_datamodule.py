"""The data module and its sampler on the synthetic files: split, normalization, batch order, the
ranks' shares, resuming mid-epoch. (Real MNIST's sizes and statistics: integration.)"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mnist_lit.data import EpochShuffleSampler, MNISTDataModule

from .conftest import SYNTHETIC, TEST_N, TRAIN_N, VAL_N, SyntheticDataModule, synthetic_split


def test_split_sizes_and_types(synthetic_datamodule) -> None:
    dm = synthetic_datamodule()
    sizes = {split: len(images) for split, (images, _) in dm.splits.items()}
    assert sizes == {"train": TRAIN_N - VAL_N, "val": VAL_N, "test": TEST_N}
    assert dm.splits["train"][0].dtype == torch.uint8
    assert dm.splits["train"][0].shape[1:] == (28, 28)
    assert set(dm.splits["test"][1].unique().tolist()) == set(range(10))
    assert dm.hparams.dataset == SYNTHETIC.name  # saved in checkpoints


def test_the_files_are_read_as_the_idx_writer_wrote_them(synthetic_datamodule) -> None:
    images, labels = synthetic_split(TEST_N, seed=2)
    test_images, test_labels = synthetic_datamodule().splits["test"]
    assert torch.equal(test_images, torch.from_numpy(images))
    assert torch.equal(test_labels, torch.from_numpy(labels).long())


def test_split_is_fixed_by_split_seed_and_disjoint(synthetic_datamodule) -> None:
    first, again = synthetic_datamodule(), synthetic_datamodule()
    assert torch.equal(first.splits["val"][0], again.splits["val"][0])
    other = synthetic_datamodule(split_seed=7)
    assert not torch.equal(first.splits["val"][0], other.splits["val"][0])
    train = {bytes(img.numpy()) for img in first.splits["train"][0]}
    assert not any(bytes(img.numpy()) in train for img in first.splits["val"][0])


def test_val_size_is_configurable(synthetic_datamodule) -> None:
    dm = synthetic_datamodule(val_size=100)
    assert len(dm.splits["val"][0]) == 100 and len(dm.splits["train"][0]) == TRAIN_N - 100


@pytest.mark.parametrize("val_size", [0, TRAIN_N, TRAIN_N + 1])
def test_a_val_size_that_leaves_nothing_to_train_is_refused(val_size: int) -> None:
    with pytest.raises(ValueError, match=f"val_size={val_size}"):
        SyntheticDataModule(data_dir="unused", val_size=val_size)


def test_batches_are_normalized_float_images(synthetic_datamodule) -> None:
    dm = synthetic_datamodule(batch_size=50, mean=0.2, std=0.4)
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(0)
    images, labels = next(iter(loader))
    assert images.shape == (50, 1, 28, 28) and images.dtype == torch.float32
    assert labels.shape == (50,) and labels.dtype == torch.int64
    order = loader.sampler.indices()[:50]
    raw, want_labels = dm.splits["train"][0][order], dm.splits["train"][1][order]
    expected = (raw.float().unsqueeze(1) / 255 - 0.2) / 0.4
    assert torch.allclose(images, expected, atol=1e-5)
    assert torch.equal(labels, want_labels)


def test_loader_covers_every_sample_once_per_epoch(synthetic_datamodule) -> None:
    dm = synthetic_datamodule(eval_batch_size=25)
    loader = dm.val_dataloader()
    assert len(loader) == VAL_N // 25 + (VAL_N % 25 > 0)
    seen = torch.cat([labels for _, labels in loader])
    assert torch.equal(seen, dm.splits["val"][1])  # unshuffled: the split's own order
    train = dm.train_dataloader()
    train.sampler.set_epoch(2)
    assert sorted(torch.cat([lb for _, lb in train]).tolist()) == sorted(
        dm.splits["train"][1].tolist()
    )


def test_the_device_a_trainer_names_holds_the_splits(synthetic_datamodule) -> None:
    dm = synthetic_datamodule(on_device=True)
    cpu = SimpleNamespace(root_device=torch.device("cpu"))
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1, strategy=cpu)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.device.type == "cpu"


# ----------------------------------------------------------------------------- the sampler


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
    assert not torch.equal(epoch0, EpochShuffleSampler(100, shuffle=True, seed=4).indices())
    assert torch.equal(EpochShuffleSampler(5, shuffle=False, seed=3).indices(), torch.arange(5))


def test_ranks_split_an_epoch_without_overlap() -> None:
    shares = [EpochShuffleSampler(10, True, 0, rank=r, world_size=3).indices() for r in range(3)]
    assert all(len(share) == 4 for share in shares)  # padded to equal length
    assert set(torch.cat(shares).tolist()) == set(range(10))


@pytest.mark.parametrize("size", [10, 11, 55_000])
def test_each_sample_once_per_epoch_across_ranks(size: int) -> None:
    """The ranks' shares are disjoint, cover the data set, and are equally long (padded)."""
    for epoch in (0, 1):
        shares = []
        for rank in (0, 1):
            sampler = EpochShuffleSampler(size, shuffle=True, seed=3, rank=rank, world_size=2)
            sampler.set_epoch(epoch)
            shares.append(sampler.indices())
        assert len(shares[0]) == len(shares[1]) == len(sampler)
        seen = torch.cat(shares)
        assert set(seen.tolist()) == set(range(size))
        assert len(seen) == size + size % 2  # an odd size repeats one index to pad


def test_half_batches_on_two_ranks_make_the_same_global_batches() -> None:
    """Why trainer=ddp with data.batch_size=B/2 is the fair comparison with one process at B.

    Batch k of rank 0 and batch k of rank 1 together hold exactly the samples of batch k of a
    single process, so DDP (which averages the two ranks' mean gradients) takes the same steps.
    """
    size, batch = 55_000, 128
    single = EpochShuffleSampler(size, shuffle=True, seed=7).indices().split(batch)
    ranks = [
        EpochShuffleSampler(size, True, 7, rank=rank, world_size=2).indices().split(batch // 2)
        for rank in (0, 1)
    ]
    assert len(single) == len(ranks[0]) == len(ranks[1])
    for whole, half0, half1 in zip(single, *ranks, strict=True):
        assert sorted(torch.cat([half0, half1]).tolist()) == sorted(whole.tolist())


def test_data_module_gives_each_rank_its_share(synthetic_datamodule) -> None:
    """The loaders of every split take the rank and world size from the trainer."""
    data = synthetic_datamodule(batch_size=20)
    for rank in (0, 1):
        cpu = SimpleNamespace(root_device=torch.device("cpu"))  # where data.on_device puts it
        data.trainer = SimpleNamespace(global_rank=rank, world_size=2, strategy=cpu)
        for loader, size in (
            (data.train_dataloader(), TRAIN_N - VAL_N),
            (data.val_dataloader(), VAL_N),
            (data.test_dataloader(), TEST_N),
        ):
            assert (loader.sampler.rank, loader.sampler.world_size) == (rank, 2)
            assert len(loader.sampler) == size // 2


# ----------------------------------------------------------------------------- resuming


def test_train_batches_resume_mid_epoch(synthetic_datamodule) -> None:
    """A loader restored from ``state_dict`` yields the rest of the epoch, augmented the same."""
    datamodule = synthetic_datamodule(batch_size=16, augment={"shift": 2, "degrees": 10})
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(3)
    whole_epoch = list(loader)
    partial = iter(loader)
    for _ in range(5):
        next(partial)
    state = loader.state_dict()
    assert state == {"epoch": 3, "served": 5}

    restored = datamodule.train_dataloader()
    restored.load_state_dict(state)
    restored.sampler.set_epoch(3)
    rest = list(restored)
    assert len(rest) == len(whole_epoch) - 5
    for (images, labels), (want_images, want_labels) in zip(rest, whole_epoch[5:], strict=True):
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
    # the next epoch is whole again
    restored.sampler.set_epoch(4)
    assert len(list(restored)) == len(whole_epoch)


def test_a_saved_position_of_another_epoch_is_ignored(synthetic_datamodule) -> None:
    loader = synthetic_datamodule(batch_size=16).train_dataloader()
    loader.load_state_dict({"epoch": 1, "served": 5})
    loader.sampler.set_epoch(2)
    assert len(list(loader)) == len(loader)


def test_only_training_batches_are_augmented(synthetic_datamodule) -> None:
    plain = synthetic_datamodule()
    augmented = synthetic_datamodule(augment={"shift": 2})
    assert not torch.equal(
        next(iter(plain.train_dataloader()))[0], next(iter(augmented.train_dataloader()))[0]
    )
    for stage in ("val_dataloader", "test_dataloader"):
        one, other = (next(iter(getattr(dm, stage)())) for dm in (plain, augmented))
        assert torch.equal(one[0], other[0])


def test_mnist_data_module_is_the_synthetic_ones_parent() -> None:
    assert issubclass(SyntheticDataModule, MNISTDataModule)
    assert MNISTDataModule.train_total == 60_000
