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
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from mnist_lit.console import first_line
from mnist_lit.errors import UserError

#: what a folder is searched for (case-insensitive)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: the largest image file read, and the most pixels decoded (a 28x28 input needs far fewer)
MAX_IMAGE_BYTES = 32 * 2**20
MAX_IMAGE_PIXELS = 40_000_000


# ----------------------------------------------------------------------------- reading


def decode(data: bytes) -> Tensor:
    """Decode PNG/JPEG (GIF, WebP) bytes to ``[C, H, W]`` (uint8, or uint16 for 16-bit PNG).

    At most ``MAX_IMAGE_BYTES`` and ``MAX_IMAGE_PIXELS``: a small PNG can hold billions of pixels.
    """
    if not data:
        raise UserError("the file is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise UserError(f"the file is over {MAX_IMAGE_BYTES // 2**20} MiB: pass a smaller image")
    check_pixel_count(data)
    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they are still
            # the pinned version's, and PIL (already installed) is the way out if they go
            warnings.filterwarnings("ignore", ".*decoding and encoding capabilities", Warning)
            image = decode_image(
                torch.frombuffer(bytearray(data), dtype=torch.uint8),
                mode=ImageReadMode.UNCHANGED,
                apply_exif_orientation=True,  # phone photos are stored sideways with a tag
            )
    except RuntimeError as err:
        reason = _torchvision_reason(err)
        if reason.startswith("Unsupported image file"):
            raise UserError("not an image (PNG or JPEG expected)") from None
        raise UserError(f"the image is truncated or corrupt ({reason})") from None
    return image[0] if image.ndim == 4 else image  # an animated GIF: its first frame


def read_image(path: str | Path) -> Tensor:
    """Read and decode one image file; an ``UserError`` says why when it cannot be.

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
        data = f.read(MAX_IMAGE_BYTES + 1)
    return decode(data)


def check_pixel_count(data: bytes) -> None:
    """Refuse an image of over ``MAX_IMAGE_PIXELS`` from its header, before decoding it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:  # reads the header only
                width, height = image.size
    except Image.DecompressionBombError:  # PIL's own limit, far above ours
        width = height = MAX_IMAGE_PIXELS
    except Exception:  # not an image PIL knows: the decoder says what it is
        return
    if width * height > MAX_IMAGE_PIXELS:
        raise UserError(
            f"the image has over {MAX_IMAGE_PIXELS // 10**6} million pixels (a decompression "
            "bomb?): pass a smaller image"
        )


def find_images(folder: str | Path) -> list[Path]:
    """The PNG and JPEG files directly in ``folder``, sorted by name."""
    return sorted(
        p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def _torchvision_reason(err: RuntimeError) -> str:
    """torchvision's message without its ``function, /path/file.cpp:NN,`` prefix."""
    return re.sub(r"^[\w()]+, \S+\.cpp:\d+, ", "", first_line(err)).strip()


# ----------------------------------------------------------------------------- steps


def to_gray(image: Tensor) -> Tensor:
    """``[C, H, W]`` or ``[H, W]`` integer or float image -> ``[H, W]`` float gray in [0, 1].

    Transparent pixels often hide arbitrary colour, so an alpha channel is laid over white when
    the opaque pixels are mostly dark (ink on a transparent sheet) and over black otherwise.
    """
    if image.ndim == 2:
        image = image[None]
    if image.dtype.is_floating_point:
        pixels = image.float()
    else:
        pixels = image.float() / float(torch.iinfo(image.dtype).max)
    channels = pixels.shape[0]
    if channels not in (1, 2, 3, 4):
        raise UserError(f"the image has {channels} channels, not 1 to 4")
    has_alpha = channels in (2, 4)
    color = pixels[:-1] if has_alpha else pixels
    gray = F.rgb_to_grayscale(color)[0] if color.shape[0] == 3 else color[0]
    if has_alpha:
        alpha = pixels[-1]
        ink = (gray * alpha).sum() / alpha.sum().clamp_min(1e-6)
        background = 1.0 if ink < 0.5 else 0.0
        gray = gray * alpha + background * (1 - alpha)
    return gray.clamp(0, 1)


def border(gray: Tensor) -> Tensor:
    """The pixels of the outermost rows and columns."""
    return torch.cat([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])


def light_on_dark(gray: Tensor) -> Tensor:
    """Invert when the border is mostly bright: MNIST's digits are light on black."""
    return 1.0 - gray if border(gray).median() > 0.5 else gray


def stretch_contrast(gray: Tensor, min_contrast: float = 0.1) -> Tensor:
    """Map the background (the border's median) to 0 and the brightest pixel to 1."""
    background = border(gray).median()
    contrast = gray.max() - background
    if contrast < min_contrast:
        raise UserError("no digit found: the image is blank")
    return ((gray - background) / contrast).clamp(0, 1)


def _bounds(mask: Tensor) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)`` of the true pixels (inclusive), or ``None``."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if len(rows) == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def crop_to_content(
    gray: Tensor, threshold: float = 0.2, faint: float = 0.05, margin: int = 2
) -> Tensor:
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


def fit_box(gray: Tensor, box_size: int = 20) -> Tensor:
    """Scale so the longer side is ``box_size`` pixels, keeping the aspect ratio (antialiased)."""
    height, width = gray.shape
    scale = box_size / max(height, width)
    new_size = [max(1, round(height * scale)), max(1, round(width * scale))]
    resized = F.resize(gray[None], new_size, antialias=True)[0]
    return resized.clamp(0, 1)


def center_of_mass(gray: Tensor) -> tuple[float, float]:
    """``(row, column)`` of the intensity-weighted mean pixel index."""
    total = gray.sum().clamp_min(1e-12)
    rows = torch.arange(gray.shape[0], dtype=gray.dtype)
    cols = torch.arange(gray.shape[1], dtype=gray.dtype)
    return float((gray.sum(dim=1) * rows).sum() / total), float(
        (gray.sum(dim=0) * cols).sum() / total
    )


def paste_centered(patch: Tensor, size: int = 28) -> Tensor:
    """Paste ``patch`` into ``size`` x ``size`` zeros with its centre of mass at ``size // 2``.

    The shift is a whole number of pixels, as MNIST's was, and the patch is kept whole: a digit
    whose mass sits far off-centre (a 7) is moved only as far as the field allows.
    """
    height, width = patch.shape
    row, col = center_of_mass(patch)
    top = min(max(round(size // 2 - row), 0), size - height)
    left = min(max(round(size // 2 - col), 0), size - width)
    field = torch.zeros(size, size, dtype=patch.dtype)
    field[top : top + height, left : left + width] = patch
    return field


# ----------------------------------------------------------------------------- the whole recipe


def mnist_like(
    image: Tensor, *, box_size: int = 20, size: int = 28, threshold: float = 0.2
) -> Tensor:
    """Any image -> ``[size, size]`` float in [0, 1], prepared as MNIST's digits were."""
    gray = stretch_contrast(light_on_dark(to_gray(image)))
    patch = fit_box(crop_to_content(gray, threshold), box_size)
    return paste_centered(patch, size)


def normalize(pixels: Tensor, mean: float, std: float) -> Tensor:
    """``(pixels - mean) / std``: what the data module does to every training batch."""
    return (pixels - mean) / std


def preprocess(
    image: Tensor, mean: float, std: float, *, box_size: int = 20, threshold: float = 0.2
) -> Tensor:
    """Any image -> a normalized ``[1, 28, 28]`` model input."""
    return normalize(mnist_like(image, box_size=box_size, threshold=threshold), mean, std)[None]
