"""The fast paths: batch augmentation, stop-at-target, the fast / best / speedrun experiments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mnist_lit.data import MNISTDataModule
from mnist_lit.data.augment import RandomAffine
from mnist_lit.train import train


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_augmentation_off_is_the_identity() -> None:
    images = torch.rand(8, 1, 28, 28)
    assert not RandomAffine().enabled
    assert torch.allclose(RandomAffine()(images, _generator(0)), images, atol=1e-5)


def test_augmentation_moves_each_image_its_own_way_reproducibly() -> None:
    images = torch.zeros(16, 1, 28, 28)
    images[:, :, 10:18, 10:18] = 1.0  # a square in the middle: it stays inside the frame
    augment = RandomAffine(shift=3, degrees=15, scale=0.1)
    once, again = augment(images, _generator(1)), augment(images, _generator(1))
    assert torch.equal(once, again)
    assert not torch.equal(once, augment(images, _generator(2)))
    assert once.shape == images.shape and once.min() >= 0 and once.max() <= 1
    moved = (once - images).abs().flatten(1).sum(1)
    assert (moved > 0).all()  # every image changed
    centers = (once[:, 0].sum(1) * torch.arange(28.0)).sum(1) / once[:, 0].sum((1, 2))
    assert centers.std() > 0.1  # ... each differently
    mass = once.flatten(1).sum(1) / images.flatten(1).sum(1)
    assert ((mass > 0.75) & (mass < 1.3)).all()  # a warp, not a wipe (zoom within 10 %)


def test_bad_augmentation_is_rejected() -> None:
    with pytest.raises(ValueError, match="scale in"):
        RandomAffine(scale=1.5)


def test_only_training_batches_are_augmented(mnist_data_dir: Path) -> None:
    plain = MNISTDataModule(data_dir=str(mnist_data_dir))
    augmented = MNISTDataModule(data_dir=str(mnist_data_dir), augment={"shift": 2})
    for datamodule in (plain, augmented):
        datamodule.setup()
    assert not torch.equal(
        next(iter(plain.train_dataloader()))[0], next(iter(augmented.train_dataloader()))[0]
    )
    for stage in ("val_dataloader", "test_dataloader"):
        one, other = (next(iter(getattr(dm, stage)())) for dm in (plain, augmented))
        assert torch.equal(one[0], other[0])


def _summary(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def test_stop_at_target_stops_and_says_when(train_cfg) -> None:
    cfg = train_cfg("model=mlp", "trainer.max_epochs=4", "stop_at=0.5")
    train(cfg)
    summary = _summary(cfg)
    assert summary["epochs"] == 1  # 8 batches of the MLP reach 50 %: stopped after epoch 0
    metrics = summary["metrics"]
    assert metrics["val/acc"] >= 0.5
    assert 0 < metrics["time_to_target/seconds"] < summary["fit_seconds"]
    assert metrics["time_to_target/epochs"] == pytest.approx(1.0)  # 8 of 8 batches


def test_unreached_target_trains_every_epoch(train_cfg) -> None:
    cfg = train_cfg("model=mlp", "trainer.max_epochs=2", "stop_at=1.0")
    train(cfg)
    summary = _summary(cfg)
    assert summary["epochs"] == 2
    assert "time_to_target/seconds" not in summary["metrics"]


@pytest.mark.parametrize("experiment", ["fast", "best", "speedrun"])
def test_experiments_run(experiment: str, train_cfg) -> None:
    """Each recipe composes and trains (a few batches; speedrun's bf16 runs on the CPU too)."""
    cfg = train_cfg(f"experiment={experiment}", "trainer.max_epochs=1")
    assert train(cfg) is not None
    assert 0.1 < _summary(cfg)["metrics"]["test/acc"] <= 1.0


@pytest.mark.slow
def test_fast_reaches_99_percent_in_one_epoch(train_cfg) -> None:
    """The claim of conf/experiment/fast.yaml, measured: one full epoch, the full test set."""
    cfg = train_cfg(
        "experiment=fast",
        "trainer.limit_train_batches=1.0",
        "trainer.limit_val_batches=1.0",
        "trainer.limit_test_batches=1.0",
    )
    train(cfg)
    summary = _summary(cfg)
    assert summary["epochs"] == 1
    assert summary["metrics"]["test/acc"] >= 0.99
