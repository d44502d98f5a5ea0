"""Batch augmentation (``data/augment.py``): off is the identity, each image gets its own draw."""

from __future__ import annotations

import pytest
import torch

from mnist_lit.data.augment import (
    DigitAugment,
    RandomAffine,
    change_thickness,
    gaussian_blur,
    lower_resolution,
    max_3x3,
)


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


# ----------------------------------------------------------------------------- DigitAugment

ALL_ON = {
    "shift": 2.0,
    "degrees": 20.0,
    "scale": 0.1,
    "thicken": 1.5,
    "thin": 0.5,
    "blur": 1.0,
    "low_res": 0.5,
    "contrast": 0.5,
    "faint": 0.5,
    "noise": 0.1,
}


def _strokes(batch: int = 16) -> torch.Tensor:
    """A bar and a ring per image, slightly different in each: a stand-in for digits."""
    images = torch.zeros(batch, 1, 28, 28)
    images[:, :, 6:22, 12:15] = 1.0
    images[:, :, 8:20, 8:10] = 0.6
    return images + torch.linspace(0, 0.01, batch).view(-1, 1, 1, 1) * images


def test_digit_augment_at_zero_strength_is_the_identity() -> None:
    images = _strokes().clamp(0, 1)
    off = DigitAugment()
    assert not off.enabled
    assert torch.equal(off(images, _generator(0)), images)
    for name in ALL_ON:  # each effect alone at 0 is off too
        assert not DigitAugment(**{name: 0.0}).enabled
    assert torch.equal(change_thickness(images, torch.zeros(16)), images)
    assert torch.allclose(gaussian_blur(images, torch.zeros(16)), images, atol=1e-6)
    assert torch.equal(lower_resolution(images, torch.zeros(16)), images)


@pytest.mark.parametrize("name", list(ALL_ON))
def test_each_effect_keeps_shape_and_range_and_is_seeded(name: str) -> None:
    images = _strokes().clamp(0, 1)
    augment = DigitAugment(**{name: ALL_ON[name]})
    assert augment.enabled
    once, again = augment(images, _generator(3)), augment(images, _generator(3))
    assert once.shape == images.shape and once.dtype == images.dtype
    assert once.min() >= 0 and once.max() <= 1 + 1e-6
    assert torch.equal(once, again)  # the same generator seed: the same batch
    assert not torch.equal(once, augment(images, _generator(4)))
    changed = (once - images).abs().flatten(1).amax(1) > 1e-4
    assert changed.float().mean() > 0.5  # per-image draws: most images change


def test_all_effects_together_draw_per_image() -> None:
    images = _strokes().clamp(0, 1)
    out = DigitAugment(**ALL_ON)(images, _generator(0))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert out.flatten(1).sum(1).std() > 1.0  # each image its own strength


def test_thickness_grows_and_shrinks_the_ink() -> None:
    images = _strokes(4).clamp(0, 1)
    ink = images.flatten(1).sum(1)
    thicker = change_thickness(images, torch.full((4,), 1.0)).flatten(1).sum(1)
    thinner = change_thickness(images, torch.full((4,), -1.0)).flatten(1).sum(1)
    half = change_thickness(images, torch.full((4,), 0.5)).flatten(1).sum(1)
    assert (thicker > ink).all() and (thinner < ink).all()
    assert torch.allclose(half, (ink + thicker) / 2, rtol=1e-5)  # fractions blend linearly


def test_blur_keeps_the_mass_and_spreads_it() -> None:
    images = torch.zeros(2, 1, 28, 28)
    images[:, :, 14, 14] = 1.0
    out = gaussian_blur(images, torch.tensor([0.0, 1.5]))
    assert torch.allclose(out.flatten(1).sum(1), torch.ones(2), atol=1e-5)
    assert out[0, 0, 14, 14] > 0.99 and out[1, 0, 14, 14] < 0.2


def test_lower_resolution_loses_detail() -> None:
    images = torch.zeros(1, 1, 28, 28)
    images[..., ::2] = 1.0  # stripes one pixel wide: gone at half the resolution
    out = lower_resolution(images, torch.tensor([0.5]))
    assert out.std() < 0.1 * images.std()


def test_p_leaves_the_other_images_as_they_are() -> None:
    images = _strokes(64).clamp(0, 1)
    out = DigitAugment(**ALL_ON, p=0.5)(images, _generator(0))
    same = (out == images).flatten(1).all(1)
    assert 0.2 < same.float().mean() < 0.8  # about half untouched, the rest augmented
    assert torch.equal(
        DigitAugment(**ALL_ON, p=1.0)(images, _generator(0)),
        DigitAugment(**ALL_ON)(images, _generator(0)),
    )


def test_bad_digit_augmentation_is_rejected() -> None:
    with pytest.raises(ValueError, match="low_res"):
        DigitAugment(low_res=1.0)
    with pytest.raises(ValueError, match="faint"):
        DigitAugment(faint=1.0)
    with pytest.raises(ValueError, match="p="):
        DigitAugment(p=0.0)
    with pytest.raises(ValueError, match="thin"):
        DigitAugment(thin=-1.0)


def test_max_3x3_is_max_pooling() -> None:
    images = torch.rand(4, 1, 28, 28, generator=_generator(0))
    assert torch.equal(max_3x3(images), torch.nn.functional.max_pool2d(images, 3, 1, 1))
