"""A check set of digits that are not from MNIST, generated from a seed: how a model does on
the digits people draw, type, photograph and scan.

``python benchmarks/check_set.py --out DIR [--seed 0] [--per-category 300] [--per-style 100]``
writes ``DIR/<category>/<number>.png`` and ``DIR/labels.csv`` (``file,label,category,source``).
Nothing here reads MNIST: every digit is drawn from scratch, either as pen strokes (what a mouse
or a pen on a canvas makes) or as text in a font only matplotlib ships (``CHECK_FONTS``, not a
system's DejaVu files). Each category is one way people's digits differ from MNIST's:

``pen``        digits drawn on a 280-pixel canvas as the page's is, in every writing style of
               ``mnist_lit.data.pen_digits`` (a 1 with a flag, a 7 with a bar, an open 4...),
               ``--per-style`` of each: the held-apart draws of the styles training mixes in
               (its own seed stream, ``pen_digits.CHECK``; training draws from ``TRAIN``)
``font``       typed digits in the fonts, dark on light or light on dark
``thin``       hairline pen strokes
``thick``      strokes a fifth of the digit's height wide, bold fonts with a wide outline
``offcentre``  a small digit far from the centre of a large page
``rotated``    turned by 10 to 25 degrees either way
``blurry``     out of focus: a Gaussian blur of 2 to 6 % of the page
``lowres``     scanned at 10 to 16 pixels a side
``scan``       dark ink on tinted, grainy, not quite evenly lit paper, through JPEG

The categories after ``pen`` draw their strokes from ``digit_drawing.py``'s own skeletons, which
training never sees. Image ``i`` of a category depends on ``(seed, category, i)`` alone, so a
smaller set is a prefix of a larger one and the same seed gives the same files (PIL and its
FreeType the same).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from digit_drawing import BOLD_FONTS, CHECK_FONTS, PAGE, draw_strokes, draw_text
from PIL import Image, ImageFilter

from mnist_lit.data import pen_digits

CATEGORIES = ("pen", "font", "thin", "thick", "offcentre", "rotated", "blurry", "lowres", "scan")

# ----------------------------------------------------------------------------- the categories


@dataclass(frozen=True)
class Sample:
    """One image of the check set: its pixels (uint8 gray or RGB), label, category and source."""

    pixels: np.ndarray
    label: int
    category: str
    source: str


def _pen_or_font(
    label: int, rng: np.random.Generator, pen: tuple[float, float] = (0.06, 0.12)
) -> tuple[np.ndarray, str]:
    """Half the digits are pen strokes, half typed in one of ``CHECK_FONTS``."""
    if rng.random() < 0.5:
        return draw_strokes(label, rng, rng.uniform(*pen))
    return draw_text(label, CHECK_FONTS[int(rng.integers(len(CHECK_FONTS)))], rng)


def _to_image(
    ink: np.ndarray, rng: np.random.Generator, dark_on_light: bool | None = None
) -> np.ndarray:
    """Ink in [0, 1] -> uint8 gray: black on white (as most pages are) or white on black."""
    if dark_on_light is None:
        dark_on_light = rng.random() < 0.75
    gray = 1.0 - ink if dark_on_light else ink
    return np.round(gray * 255).astype(np.uint8)


def _font(label: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    return draw_text(label, CHECK_FONTS[int(rng.integers(len(CHECK_FONTS)))], rng)


def _thin(label: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    return draw_strokes(label, rng, rng.uniform(0.015, 0.04))


def _thick(label: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    if rng.random() < 0.7:
        return draw_strokes(label, rng, rng.uniform(0.16, 0.24))
    return draw_text(label, BOLD_FONTS[int(rng.integers(len(BOLD_FONTS)))], rng, outline=0.04)


def _offcentre(label: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    ink, source = _pen_or_font(label, rng)
    small = round(PAGE * rng.uniform(0.2, 0.4))
    digit = Image.fromarray(ink).resize((small, small), Image.Resampling.LANCZOS)
    page = np.zeros((PAGE * 2, PAGE * 2), np.float32)
    top, left = (int(v) for v in rng.integers(0, 2 * PAGE - small, 2))
    page[top : top + small, left : left + small] = np.clip(np.asarray(digit), 0, 1)
    return page, source


def _rotated(label: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    ink, source = _pen_or_font(label, rng)
    angle = rng.uniform(10, 25) * rng.choice([-1, 1])
    turned = Image.fromarray(ink).rotate(angle, resample=Image.Resampling.BICUBIC)
    return np.clip(np.asarray(turned), 0, 1), f"{source}@{angle:+.0f}deg"


def _blurry(label: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    ink, source = _pen_or_font(label, rng)
    radius = rng.uniform(0.02, 0.06) * PAGE
    # PIL blurs 8-bit images only
    blurred = Image.fromarray(np.round(ink * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(radius)
    )
    return np.asarray(blurred, dtype=np.float32) / 255.0, source


def _lowres(label: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    ink, source = _pen_or_font(label, rng)
    side = int(rng.integers(10, 17))
    small = Image.fromarray(ink).resize((side, side), Image.Resampling.BOX)
    return np.clip(np.asarray(small), 0, 1), f"{source}@{side}px"


def _scan(label: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Dark ink on paper: tinted, lit a little unevenly, grainy, saved through JPEG: RGB uint8.

    The light varies by at most 0.08 corner to corner: a scanner's. (A phone photo's stronger
    gradient passes predict.py's crop threshold and shrinks the digit: a preprocessing matter.)
    """
    ink, source = _pen_or_font(label, rng)
    side = ink.shape[0]
    paper = rng.uniform(0.7, 0.95)
    ramp = np.linspace(-1, 1, side, dtype=np.float32)
    light = rng.uniform(-0.02, 0.02) * ramp[None, :] + rng.uniform(-0.02, 0.02) * ramp[:, None]
    ink_level = rng.uniform(0.05, 0.35)
    gray = (paper + light) * (1 - ink) + ink_level * ink
    gray = gray + rng.normal(0, rng.uniform(0.02, 0.07), gray.shape).astype(np.float32)
    tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)], np.float32)
    rgb = np.clip(gray[..., None] * tint, 0, 1)
    buffer = io.BytesIO()
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(
        buffer, "JPEG", quality=int(rng.integers(40, 90))
    )
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")), source


#: how each category draws the ink of one digit
_INK: dict[str, Callable[[int, np.random.Generator], tuple[np.ndarray, str]]] = {
    "font": _font,
    "thin": _thin,
    "thick": _thick,
    "offcentre": _offcentre,
    "rotated": _rotated,
    "blurry": _blurry,
    "lowres": _lowres,
}


def pen_sample(index: int, seed: int = 0) -> Sample:
    """Image ``index`` of the ``pen`` category: style ``index % len(STYLES)``, drawn from
    ``pen_digits.rng(CHECK, seed, index)`` on the page's 280-pixel canvas, white on black as
    the page sends it or, one in four, dark on light as a drawing on paper."""
    rng = pen_digits.rng(pen_digits.CHECK, seed, index)
    style = pen_digits.STYLES[index % len(pen_digits.STYLES)]
    ink = pen_digits.draw_canvas(pen_digits.pointer_strokes(style, rng))
    pixels = _to_image(ink, rng, dark_on_light=rng.random() < 0.25)
    return Sample(pixels, style.label, "pen", f"pen/{style.name}")


def sample(category: str, index: int, seed: int = 0) -> Sample:
    """Image ``index`` of ``category``: its label is ``index % 10`` (``pen``: its style's), its
    draws its own."""
    if category not in CATEGORIES:
        raise ValueError(f"category={category!r}: one of {', '.join(CATEGORIES)}")
    if category == "pen":
        return pen_sample(index, seed)
    # a stable key per (seed, category, index): Python's hash() of a str changes per process
    rng = np.random.default_rng([seed, zlib.crc32(category.encode()), index])
    label = index % 10
    if category == "scan":
        pixels, source = _scan(label, rng)
    else:
        ink, source = _INK[category](label, rng)
        pixels = _to_image(ink, rng)
    return Sample(pixels, label, category, source)


def generate(
    out: str | Path,
    per_category: int = 300,
    seed: int = 0,
    categories: Sequence[str] = CATEGORIES,
    per_style: int = 100,
) -> Path:
    """Write ``per_category`` PNG files per category (``pen``: ``per_style`` per writing style)
    and ``labels.csv`` under ``out``.

    Returns the path of ``labels.csv``, written last (atomically), so a folder that has it is
    complete.
    """
    from mnist_lit.errors import atomic_write_bytes

    out = Path(out)
    rows = []
    for category in categories:
        folder = out / category
        folder.mkdir(parents=True, exist_ok=True)
        count = per_style * len(pen_digits.STYLES) if category == "pen" else per_category
        for index in range(count):
            item = sample(category, index, seed)
            name = f"{category}/{index:05d}.png"
            buffer = io.BytesIO()
            Image.fromarray(item.pixels).save(buffer, "PNG")
            atomic_write_bytes(out / name, buffer.getvalue())
            rows.append(
                {"file": name, "label": item.label, "category": category, "source": item.source}
            )
    text = io.StringIO()
    writer = csv.DictWriter(
        text, fieldnames=["file", "label", "category", "source"], lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    labels = out / "labels.csv"
    atomic_write_bytes(labels, text.getvalue().encode())
    return labels


def read_labels(folder: str | Path) -> list[dict[str, str]]:
    """The rows of ``folder/labels.csv``: ``file`` (relative to it), ``label``, ``category``."""
    with open(Path(folder) / "labels.csv", newline="") as f:
        return list(csv.DictReader(f))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/check_set.py",
        description="Generate the check set of non-MNIST digits (PNG files and labels.csv).",
    )
    parser.add_argument("--out", required=True, help="folder to write (created if missing)")
    parser.add_argument("--seed", type=int, default=0, help="the draws (default 0)")
    parser.add_argument(
        "--per-category",
        type=int,
        default=300,
        help=f"images per category but pen (default 300, x {len(CATEGORIES) - 1})",
    )
    parser.add_argument(
        "--per-style",
        type=int,
        default=100,
        help=f"pen images per writing style (default 100, x {len(pen_digits.STYLES)})",
    )
    parser.add_argument(
        "--categories", default=",".join(CATEGORIES), help="comma-separated subset (default: all)"
    )
    args = parser.parse_args(argv)
    categories = [c for c in args.categories.split(",") if c]
    unknown = sorted(set(categories) - set(CATEGORIES))
    if unknown or args.per_category < 1 or args.per_style < 1 or args.seed < 0:
        problem = (
            f"unknown categories {unknown}: pick from {', '.join(CATEGORIES)}"
            if unknown
            else "--per-category and --per-style must be >= 1 and --seed >= 0"
        )
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        labels = generate(args.out, args.per_category, args.seed, categories, args.per_style)
    except OSError as err:
        print(f"error: cannot write --out={args.out}: {err.strerror or err}", file=sys.stderr)
        return 1
    print(f"[mnist-lit] wrote {len(read_labels(labels.parent))} images and {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
