"""MNIST's preprocessing for any image (``export/preprocess.py``) on images drawn in memory.

(Real MNIST digits, and digits rendered as a person's files: integration/test_predict.py.)
"""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

import mnist_lit.export.preprocess as preprocessing
from mnist_lit.errors import UserError
from mnist_lit.export.preprocess import (
    center_of_mass,
    decode,
    find_images,
    mnist_like,
    prepare,
    read_image,
    to_gray,
)

#: a PNG of noise does not compress: cut short, its pixel data is missing
NOISE = np.random.default_rng(0).integers(0, 256, (30, 30), dtype=np.uint8)


def seven(height: int = 90, width: int = 70) -> np.ndarray:
    """A '7' of thick light strokes on black, off-centre in a larger uint8 image."""
    image = np.zeros((height, width), dtype=np.uint8)
    image[10:18, 15:60] = 230  # the bar
    for row in range(18, 80):  # the stem, slanting left
        col = 58 - (row - 18) * 30 // 62
        image[row, col - 4 : col + 4] = 230
    return image


def mnist_digit() -> np.ndarray:
    """An already MNIST-like uint8 28x28 digit: the recipe's own output."""
    return (mnist_like(seven()) * 255).round().astype(np.uint8)


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def test_dark_on_light_bar_is_inverted_boxed_and_centred() -> None:
    """A dark 40x10 bar on a light 100x100 page: light on black, 20x5 after scaling, centred."""
    page = np.full((100, 100), 230, dtype=np.uint8)
    page[10:50, 70:80] = 20
    out = mnist_like(page)
    assert out.shape == (28, 28)
    assert out.min() == 0 and out.max() == pytest.approx(1.0, abs=0.02)
    rows, cols = np.nonzero(out > 0.5)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 5
    row, col = center_of_mass(out)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5
    assert np.array_equal(out, mnist_like(255 - page))  # polarity does not matter


def test_an_mnist_like_digit_comes_back_unchanged() -> None:
    """A prepared digit is prepared already: preprocessing gives it back (not just similar)."""
    digit = mnist_digit()
    ours = prepare(encoded(digit, "PNG"))
    assert ours.shape == (1, 28, 28) and ours.dtype == np.float32
    assert np.corrcoef(ours.flatten(), digit.flatten() / 255)[0, 1] > 0.99


def test_the_box_size_is_the_longer_side() -> None:
    for box in (20, 28):
        rows, cols = np.nonzero(mnist_like(seven(), box_size=box) > 0.05)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == box


def test_transparent_background_is_not_taken_for_ink() -> None:
    digit = mnist_digit()
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)  # black everywhere, the digit in alpha
    rgba[:, :, 3] = digit
    correlation = np.corrcoef(mnist_like(rgba).flatten(), digit.flatten())[0, 1]
    assert correlation > 0.99


def test_colour_and_sixteen_bit_images_become_gray() -> None:
    rgb = np.zeros((10, 10, 3), dtype=np.uint8)
    rgb[2:8, 2:8] = 255
    assert np.array_equal(to_gray(rgb) > 0.5, to_gray(rgb[:, :, 0]) > 0.5)
    wide = rgb[:, :, 0].astype(np.uint16) * 257  # a 16-bit PNG's range
    assert np.array_equal(to_gray(wide) > 0.5, to_gray(rgb) > 0.5)
    sixteen_bit = decode(encoded(wide, "PNG"))
    assert sixteen_bit.dtype == np.uint16 and sixteen_bit.max() == 65535


@pytest.mark.parametrize(
    ("image", "cause"),
    [
        (np.full((50, 40), 200, dtype=np.uint8), "no digit"),
        (np.zeros((28, 28, 5), dtype=np.uint8), "5 channels"),
    ],
    ids=["blank", "five channels"],
)
def test_images_with_nothing_to_classify_say_why(image: np.ndarray, cause: str) -> None:
    with pytest.raises(UserError) as caught:
        mnist_like(image)
    assert cause in str(caught.value)


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"", "empty"),
        (b"GIF? no: plain text", "not an image"),
        (encoded(NOISE, "PNG")[:600], "truncated or corrupt"),
    ],
    ids=["empty", "text", "truncated png"],
)
def test_broken_files_say_why(data: bytes, cause: str) -> None:
    with pytest.raises(UserError) as caught:
        decode(data)
    assert cause in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_each_format_read_decodes_to_the_same_digit(fmt: str) -> None:
    """The formats docs/serving.md and docs/predict-export.md name: each decoded to the image
    written (JPEG and lossy WebP within a few levels), and prepared as the PNG is."""
    pixels = seven()
    gray = to_gray(decode(encoded(pixels, fmt))) * 255
    assert gray.shape == pixels.shape
    lossy = fmt in ("JPEG", "WEBP")
    assert np.abs(gray - pixels).max() <= (40 if lossy else 0.5)
    prepared = prepare(encoded(pixels, fmt)) - prepare(encoded(pixels, "PNG"))
    assert np.abs(prepared).mean() < (0.05 if lossy else 1e-6)


def test_reading_files_and_folders(tmp_path) -> None:
    for name in ("b.png", "a.JPG", "c.jpeg", "d.webp", "e.GIF", "f.bmp", "notes.txt", "g.tiff"):
        (tmp_path / name).write_bytes(encoded(seven(), "PNG"))
    (tmp_path / "sub.png").mkdir()
    found = [p.name for p in find_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "c.jpeg", "d.webp", "e.GIF", "f.bmp"]
    assert read_image(tmp_path / "b.png").shape == (90, 70)
    with pytest.raises(UserError, match="cannot read it"):
        read_image(tmp_path / "missing.png")


@pytest.mark.parametrize("kind", ["folder", "device link", "fifo", "dangling link"])
def test_only_regular_files_are_read(tmp_path, kind: str) -> None:
    """A pipe would block and a device never end: each is refused at once, in one line."""
    path = tmp_path / "digit.png"
    if kind == "folder":
        path.mkdir()
    elif kind == "device link":
        path.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(tmp_path / "gone.png")
    with pytest.raises(UserError) as caught:
        read_image(path)
    assert caught.value.exit_code == 2
    assert "regular file" in str(caught.value) or "cannot read" in str(caught.value)


def test_a_decompression_bomb_is_refused_before_decoding() -> None:
    """A 60-megapixel PNG of one colour is a few hundred KB; decoding it would take GBs."""
    buffer = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(buffer, "PNG")
    assert len(buffer.getvalue()) < 1_000_000
    with pytest.raises(UserError, match="million pixels") as caught:
        decode(buffer.getvalue())
    assert caught.value.exit_code == 2


def test_a_file_over_the_byte_limit_is_refused(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(preprocessing, "MAX_IMAGE_BYTES", 1000)
    path = tmp_path / "big.png"
    path.write_bytes(encoded(seven(), "PNG") + b"\0" * 1000)
    with pytest.raises(UserError, match="MiB"):
        read_image(path)
