"""Turn an image file of any size into a 28x28 input prepared the way MNIST's own were.

A model trained on MNIST has only seen digits that are light on a dark background, fit in a
20x20 box (aspect ratio kept, antialiased) and sit in a 28x28 field with their centre of mass at
the centre. A photo or a scan is none of that, so ``mnist_like`` makes it so:

1. grayscale, in [0, 1] (an alpha channel is laid over a background that contrasts with the ink);
2. polarity: when the border is mostly bright (dark ink on paper) the image is inverted;
3. contrast: the border's level becomes 0 and the brightest pixel 1;
4. crop to the bounding box of the pixels above a light threshold;
5. scale so the longer side is ``box_size`` px (20), antialiased;
6. paste into ``size`` x ``size`` (28) with the centre of mass at pixel (14, 14), as in MNIST.

``normalize`` then applies the training set's mean and std, as the data module does per batch.

It is numpy and PIL alone, no torch: ``predict.py`` on an exported ONNX file and the server
prepare images without loading torch (``predictors.py``).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_lit.errors import UserError, first_line

#: what a folder is searched for (case-insensitive): the formats read, each decoded in
#: tests/unit/test_preprocess.py
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp")
#: the largest image file read, and the most pixels decoded (a 28x28 input needs far fewer)
MAX_IMAGE_BYTES = 32 * 2**20
MAX_IMAGE_PIXELS = 40_000_000
#: how PNG, JPEG, GIF, WebP and BMP files begin
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"RIFF", b"BM")
#: ITU-R 601 luma, as torchvision's and PIL's grayscale conversions weigh red, green and blue
LUMA = np.array([0.2989, 0.587, 0.114], dtype=np.float32)


# ----------------------------------------------------------------------------- reading


def decode(data: bytes) -> np.ndarray:
    """Decode PNG, JPEG, WebP, GIF (its first frame) or BMP bytes to ``[H, W]`` or
    ``[H, W, C]`` (uint8, or uint16 for 16-bit PNG).

    At most ``MAX_IMAGE_BYTES`` and ``MAX_IMAGE_PIXELS``: a small PNG can hold billions of pixels.
    """
    if not data:
        raise UserError("the file is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise UserError(f"the file is over {MAX_IMAGE_BYTES // 2**20} MiB: pass a smaller image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        if data.startswith(SIGNATURES):  # an image's first bytes, but PIL could not read on
            raise UserError("the image is truncated or corrupt (its header is cut)") from None
        raise UserError("not an image (PNG, JPEG, WebP, GIF or BMP expected)") from None
    except Image.DecompressionBombError:  # PIL's own limit, far above ours
        raise _too_many_pixels() from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_many_pixels()
    try:
        image.load()
        # phone photos are stored sideways with an EXIF tag; an animated GIF gives its first frame
        return _pixels(ImageOps.exif_transpose(image))
    except (OSError, SyntaxError, ValueError) as err:
        raise UserError(f"the image is truncated or corrupt ({first_line(err)})") from None


def _pixels(image: Image.Image) -> np.ndarray:
    """PIL's modes as arrays: gray, gray+alpha, RGB or RGBA, 8 or 16 bits."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit PNG
        return np.asarray(image, dtype=np.int64).clip(0, 65535).astype(np.uint16)
    if image.mode == "F":
        return np.asarray(image, dtype=np.float32)
    if image.mode not in ("L", "LA", "RGB", "RGBA"):  # palette, 1-bit, CMYK, YCbCr...
        transparent = image.mode in ("P", "PA") and "transparency" in image.info
        image = image.convert("RGBA" if transparent or image.mode == "PA" else "RGB")
    return np.asarray(image)


def _too_many_pixels() -> UserError:
    return UserError(
        f"the image has over {MAX_IMAGE_PIXELS // 10**6} million pixels (a decompression "
        "bomb?): pass a smaller image"
    )


def read_file(path: str | Path) -> bytes:
    """An image file's bytes; an ``UserError`` says why when it cannot be read.

    Only a regular file is read (a pipe would block, a device never end), and no more than
    ``decode`` takes.
    """
    try:
        # O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        raise UserError(f"cannot read it ({err.strerror or err})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise UserError("not a regular file (a folder, device or pipe): pass image files")
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_IMAGE_BYTES + 1)


def read_image(path: str | Path) -> np.ndarray:
    """Read and decode one image file (``read_file``, then ``decode``)."""
    return decode(read_file(path))


def find_images(folder: str | Path) -> list[Path]:
    """The image files (``IMAGE_SUFFIXES``) directly in ``folder``, sorted by name."""
    return sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


# ----------------------------------------------------------------------------- steps


def to_gray(image: np.ndarray) -> np.ndarray:
    """``[H, W]`` or ``[H, W, C]`` integer or float image -> ``[H, W]`` float32 gray in [0, 1].

    Transparent pixels often hide arbitrary colour, so an alpha channel is laid over white when
    the opaque pixels are mostly dark (ink on a transparent sheet) and over black otherwise.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    if np.issubdtype(image.dtype, np.floating):
        pixels = image.astype(np.float32)
    else:
        pixels = image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    channels = pixels.shape[2]
    if channels not in (1, 2, 3, 4):
        raise UserError(f"the image has {channels} channels, not 1 to 4")
    has_alpha = channels in (2, 4)
    color = pixels[:, :, :-1] if has_alpha else pixels
    gray = color @ LUMA if color.shape[2] == 3 else color[:, :, 0]
    if has_alpha:
        alpha = pixels[:, :, -1]
        ink = (gray * alpha).sum() / max(float(alpha.sum()), 1e-6)
        background = 1.0 if ink < 0.5 else 0.0
        gray = gray * alpha + background * (1 - alpha)
    return np.clip(gray, 0, 1).astype(np.float32)


def border(gray: np.ndarray) -> np.ndarray:
    """The pixels of the outermost rows and columns."""
    return np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def light_on_dark(gray: np.ndarray) -> np.ndarray:
    """Invert when the border is mostly bright: MNIST's digits are light on black."""
    return 1.0 - gray if np.median(border(gray)) > 0.5 else gray


def stretch_contrast(gray: np.ndarray, min_contrast: float = 0.1) -> np.ndarray:
    """Map the background (the border's median) to 0 and the brightest pixel to 1."""
    background = np.median(border(gray))
    contrast = gray.max() - background
    if contrast < min_contrast:
        raise UserError("no digit found: the image is blank")
    return np.clip((gray - background) / contrast, 0, 1).astype(np.float32)


def _bounds(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` of the true pixels (inclusive), or ``None``."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def crop_to_content(
    gray: np.ndarray, threshold: float = 0.2, faint: float = 0.05, margin: int = 2
) -> np.ndarray:
    """Crop to the digit: the pixels above ``threshold``, plus their faint antialiased edges.

    The threshold keeps specks and paper texture away from the box; the edges (above
    ``faint`` within ``margin`` pixels of it) are kept, so an MNIST digit is cropped exactly.
    """
    strong = _bounds(gray > threshold)
    if strong is None:
        raise UserError("no digit found: nothing stands out from the background")
    top, bottom, left, right = strong
    top, left = max(top - margin, 0), max(left - margin, 0)
    region = gray[top : bottom + margin + 1, left : right + margin + 1]
    inner_top, inner_bottom, inner_left, inner_right = _bounds(region > faint)  # type: ignore[misc]
    return region[inner_top : inner_bottom + 1, inner_left : inner_right + 1]


def fit_box(gray: np.ndarray, box_size: int = 20) -> np.ndarray:
    """Scale so the longer side is ``box_size`` pixels, keeping the aspect ratio.

    PIL's bilinear filter widens with the scale when shrinking (antialiased), as torchvision's
    ``resize(antialias=True)`` does.
    """
    height, width = gray.shape
    scale = box_size / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))  # PIL: (w, h)
    resized = Image.fromarray(gray.astype(np.float32), mode="F").resize(
        new_size, Image.Resampling.BILINEAR
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0, 1)


def center_of_mass(gray: np.ndarray) -> tuple[float, float]:
    """``(row, column)`` of the intensity-weighted mean pixel index."""
    total = max(float(gray.sum()), 1e-12)
    rows = np.arange(gray.shape[0], dtype=np.float64)
    cols = np.arange(gray.shape[1], dtype=np.float64)
    return float(gray.sum(axis=1) @ rows / total), float(gray.sum(axis=0) @ cols / total)


def paste_centered(patch: np.ndarray, size: int = 28) -> np.ndarray:
    """Paste ``patch`` into ``size`` x ``size`` zeros with its centre of mass at ``size // 2``.

    The shift is a whole number of pixels, as MNIST's was, and the patch is kept whole: a digit
    whose mass sits far off-centre (a 7) is moved only as far as the field allows.
    """
    height, width = patch.shape
    row, col = center_of_mass(patch)
    top = min(max(round(size // 2 - row), 0), size - height)
    left = min(max(round(size // 2 - col), 0), size - width)
    field = np.zeros((size, size), dtype=np.float32)
    field[top : top + height, left : left + width] = patch
    return field


# ----------------------------------------------------------------------------- the whole recipe


def mnist_like(
    image: np.ndarray, *, box_size: int = 20, size: int = 28, threshold: float = 0.2
) -> np.ndarray:
    """Any image -> ``[size, size]`` float32 in [0, 1], prepared as MNIST's digits were."""
    gray = stretch_contrast(light_on_dark(to_gray(image)))
    patch = fit_box(crop_to_content(gray, threshold), box_size)
    return paste_centered(patch, size)


def normalize(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """``(pixels - mean) / std``: what the data module does to every training batch."""
    return ((pixels - mean) / std).astype(np.float32)


def prepare(data: bytes, *, box_size: int = 20, threshold: float = 0.2) -> np.ndarray:
    """Image file bytes -> the ``[1, 28, 28]`` pixels in [0, 1] a model receives (before its
    normalization): what ``predict.py`` and the server both do to an image."""
    return mnist_like(decode(data), box_size=box_size, threshold=threshold)[None]
