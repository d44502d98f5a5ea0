"""Pen-drawn digits (``mnist_lit.data.pen_digits``): the styles, the drawings, MNIST's format,
the seed streams, and the data module mixing them into training batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_lit.data import pen_digits
from mnist_lit.data.fashion_mnist import FashionMNISTDataModule
from mnist_lit.data.pen_digits import CHECK, STYLES, TRAIN, rng
from mnist_lit.export.preprocess import mnist_like


def test_the_styles_people_bring_and_two_or_more_per_digit() -> None:
    names = {style.name for style in STYLES}
    wanted = {"1-plain", "1-flag", "1-flag-foot", "7-plain", "7-bar", "4-open", "4-closed"}
    assert wanted | {"9-straight-tail", "9-curved-tail"} <= names
    for digit in range(10):
        assert sum(style.label == digit for style in STYLES) >= 2
    assert all(style.name.startswith(str(style.label)) for style in STYLES)
    with pytest.raises(ValueError, match="1-flag"):
        pen_digits.style("1-flagg")


@pytest.mark.parametrize("style", STYLES, ids=[s.name for s in STYLES])
def test_each_style_is_drawn_inside_the_canvas_and_in_mnist_format(style) -> None:
    for index in range(3):
        drawing = pen_digits.pointer_strokes(style, rng(CHECK, 0, index), size=280)
        points = np.concatenate([np.asarray(s) for s in drawing.strokes])
        assert points.min() >= drawing.width / 2 - 1e-6
        assert points.max() <= 280 - drawing.width / 2 + 1e-6
        canvas = pen_digits.draw_canvas(drawing)
        assert canvas.shape == (280, 280) and canvas.min() >= 0 and canvas.max() > 0.9
        digit = pen_digits.mnist_digit(drawing)
        assert digit.shape == (28, 28) and digit.dtype == np.uint8
        rows, cols = np.flatnonzero(digit.max(1) > 25), np.flatnonzero(digit.max(0) > 25)
        # the longer side fills the 20-pixel box; the centre of mass is near the middle
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in range(18, 23)
        mass = digit.astype(np.float64) / digit.sum()
        centre = (mass.sum(1) @ np.arange(28), mass.sum(0) @ np.arange(28))
        assert abs(centre[0] - 14) < 2.5 and abs(centre[1] - 14) < 2.5


@pytest.mark.parametrize("style", STYLES[::4], ids=[s.name for s in STYLES[::4]])
def test_training_format_is_what_the_server_makes_of_the_canvas(style) -> None:
    """Drawn straight at 28x28, a digit looks as the page's canvas does after the server's
    preparation (crop, 20-pixel box, centre of mass): the model trains on what it is sent."""
    for index in range(3):
        drawing = pen_digits.pointer_strokes(style, rng(TRAIN, 1, index), size=280)
        direct = pen_digits.mnist_digit(drawing).astype(np.float32) / 255
        served = mnist_like(np.round(pen_digits.draw_canvas(drawing) * 255).astype(np.uint8))
        # the centres of mass round to whole pixels apart: the two agree within a pixel's shift
        shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        best = max(
            np.corrcoef(np.roll(direct, shift, (0, 1)).ravel(), served.ravel())[0, 1]
            for shift in shifts
        )
        assert best > 0.9
        assert abs(direct.sum() - served.sum()) < 0.25 * served.sum()


def test_a_digit_depends_on_its_key_alone_and_the_streams_differ() -> None:
    style = pen_digits.style("7-bar")
    first = pen_digits.pointer_strokes(style, rng(TRAIN, 0, 1, 2), size=112)
    again = pen_digits.pointer_strokes(style, rng(TRAIN, 0, 1, 2), size=112)
    assert first == again
    other_stream = pen_digits.pointer_strokes(style, rng(CHECK, 0, 1, 2), size=112)
    assert first.strokes != other_stream.strokes
    assert rng(TRAIN, 0).random() != rng(CHECK, 0).random()


def test_training_digits_are_labelled_and_cover_the_styles() -> None:
    images, labels = pen_digits.training_digits(200, seed=0, epoch=0, rank=0, batch=0)
    assert images.shape == (200, 28, 28) and images.dtype == np.uint8
    assert set(labels.tolist()) == set(range(10))
    again, _ = pen_digits.training_digits(200, seed=0, epoch=0, rank=0, batch=0)
    assert np.array_equal(images, again)
    other, _ = pen_digits.training_digits(200, seed=0, epoch=1, rank=0, batch=0)
    assert not np.array_equal(images, other)


# ----------------------------------------------------------------------------- data module


def test_pen_digits_join_training_batches_only(synthetic_datamodule) -> None:
    plain = synthetic_datamodule(batch_size=20)
    mixed = synthetic_datamodule(batch_size=20, pen_digits={"fraction": 0.25})
    plain_images, plain_labels = next(iter(plain.train_dataloader()))
    images, labels = next(iter(mixed.train_dataloader()))
    assert images.shape == (25, 1, 28, 28) and labels.shape == (25,)
    assert torch.equal(images[:20], plain_images) and torch.equal(labels[:20], plain_labels)
    assert labels.dtype == plain_labels.dtype and set(labels[20:].tolist()) <= set(range(10))
    for stage in ("val_dataloader", "test_dataloader"):
        one, other = (next(iter(getattr(dm, stage)())) for dm in (plain, mixed))
        assert torch.equal(one[0], other[0])


def test_pen_digits_resume_mid_epoch(synthetic_datamodule) -> None:
    datamodule = synthetic_datamodule(batch_size=16, pen_digits={"fraction": 0.5})
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(2)
    whole_epoch = list(loader)
    restored = datamodule.train_dataloader()
    restored.load_state_dict({"epoch": 2, "served": 3})
    restored.sampler.set_epoch(2)
    for (images, labels), (want_images, want_labels) in zip(
        list(restored), whole_epoch[3:], strict=True
    ):
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)


def test_pen_digits_are_refused_for_a_data_set_of_other_classes() -> None:
    with pytest.raises(ValueError, match=r"data\.pen_digits=null"):
        FashionMNISTDataModule(pen_digits={"fraction": 0.2})
