"""Batch augmentation (``data/augment.py``): off is the identity, each image moves its own way."""

from __future__ import annotations

import pytest
import torch

from mnist_lit.data.augment import RandomAffine


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
    with pytest.raises(ValueError, match="scale"):
        RandomAffine(scale=1.5)
