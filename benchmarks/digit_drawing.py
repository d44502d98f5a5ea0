"""One digit drawn from scratch, for the check set (``check_set.py``): as pen strokes (a
skeleton per digit and variant, jittered, slanted and stretched: what a mouse or a pen on a
canvas makes) or as text in a font that only matplotlib ships. Ink in [0, 1] on a square page,
antialiased by drawing ``SUPERSAMPLE`` times larger and downsampling.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from mnist_lit.data.pen_digits import Point, Stroke, arc, bezier

#: the fonts of the check set: files only matplotlib ships (STIX and Computer Modern), read from
#: its own folder: not the DejaVu files a system has (and a user types or screenshots), and none
#: that training renders (it renders no font). A recipe that trains on rendered digits must use
#: other fonts, or the check set measures memory.
CHECK_FONTS = (
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
)
BOLD_FONTS = ("STIXGeneralBol.ttf", "STIXGeneralBolIta.ttf", "cmb10.ttf")

#: side of the square page a digit is drawn on before a category's treatment, in pixels
PAGE = 112
#: strokes are drawn this many times larger, then downsampled: antialiased edges
SUPERSAMPLE = 4


# ----------------------------------------------------------------------------- pen strokes


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float) -> Stroke:
    """``pen_digits.arc`` with a point every 8 degrees, as the check set was first drawn."""
    return arc(cx, cy, rx, ry, start, end, step=8)


#: each digit's ways of being written, as strokes in a unit box (x right, y down)
SKELETONS: dict[int, list[list[Stroke]]] = {
    0: [[_arc(0.5, 0.5, 0.3, 0.46, -90, 270)], [_arc(0.5, 0.5, 0.36, 0.44, -100, 265)]],
    1: [
        [[(0.5, 0.04), (0.5, 0.96)]],
        [[(0.3, 0.22), (0.52, 0.04), (0.52, 0.96)]],
        [[(0.3, 0.22), (0.52, 0.04), (0.52, 0.96)], [(0.3, 0.96), (0.74, 0.96)]],
    ],
    2: [
        [[*_arc(0.5, 0.3, 0.3, 0.26, 195, 380), (0.18, 0.96), (0.84, 0.96)]],
        [
            _arc(0.5, 0.3, 0.3, 0.26, 200, 370)
            + bezier((0.79, 0.4), (0.5, 0.75), (0.2, 0.95))
            + bezier((0.2, 0.95), (0.35, 0.85), (0.85, 0.94))
        ],
    ],
    3: [
        [_arc(0.47, 0.27, 0.28, 0.23, 200, 450) + _arc(0.47, 0.73, 0.32, 0.23, -90, 165)],
        [[(0.2, 0.04), (0.8, 0.04), (0.45, 0.42), *_arc(0.48, 0.7, 0.32, 0.26, -95, 160)]],
    ],
    4: [
        [[(0.66, 0.96), (0.66, 0.04), (0.12, 0.66), (0.88, 0.66)]],
        [[(0.3, 0.04), (0.18, 0.6), (0.86, 0.6)], [(0.66, 0.3), (0.66, 0.96)]],
    ],
    5: [
        [[(0.78, 0.04), (0.3, 0.04), (0.26, 0.47)], _arc(0.5, 0.68, 0.3, 0.28, -140, 155)],
        [
            [(0.3, 0.04), (0.26, 0.47), *_arc(0.5, 0.68, 0.3, 0.28, -140, 155)],
            [(0.3, 0.04), (0.8, 0.04)],
        ],
    ],
    6: [
        [bezier((0.72, 0.04), (0.22, 0.28), (0.22, 0.7)) + _arc(0.5, 0.7, 0.28, 0.26, 180, 540)],
        [bezier((0.62, 0.04), (0.3, 0.3), (0.24, 0.72)) + _arc(0.5, 0.74, 0.26, 0.22, 180, 520)],
    ],
    7: [
        [[(0.14, 0.04), (0.86, 0.04), (0.4, 0.96)]],
        [[(0.14, 0.04), (0.86, 0.04), (0.4, 0.96)], [(0.3, 0.5), (0.76, 0.5)]],
        [
            [
                (0.14, 0.14),
                (0.14, 0.04),
                (0.86, 0.04),
                *bezier((0.86, 0.04), (0.5, 0.45), (0.46, 0.96)),
            ]
        ],
    ],
    8: [
        [_arc(0.5, 0.27, 0.23, 0.23, 90, 450), _arc(0.5, 0.73, 0.29, 0.23, -90, 270)],
        [
            bezier((0.72, 0.1), (0.3, -0.1), (0.3, 0.3))
            + bezier((0.3, 0.3), (0.82, 0.6), (0.5, 0.96))
            + bezier((0.5, 0.96), (0.15, 0.8), (0.5, 0.5))
            + bezier((0.5, 0.5), (0.8, 0.3), (0.72, 0.1))
        ],
    ],
    9: [
        [[*_arc(0.5, 0.3, 0.28, 0.26, 0, 360), (0.78, 0.3), (0.74, 0.96)]],
        [_arc(0.48, 0.3, 0.28, 0.26, -10, 350) + bezier((0.76, 0.26), (0.76, 0.75), (0.34, 0.96))],
    ],
}


def _wobble(stroke: Stroke, rng: np.random.Generator, amount: float) -> Stroke:
    """A hand's unsteadiness: a slow random drift along the stroke, ``amount`` of the box."""
    t = np.linspace(0, 1, len(stroke))
    drift = []
    for _ in range(2):  # x, then y
        phase, frequency = rng.uniform(0, 2 * math.pi, 2), rng.uniform(0.5, 2.0, 2)
        drift.append(
            sum(np.sin(2 * math.pi * f * t + p) for f, p in zip(frequency, phase, strict=True)) / 2
        )
    return [
        (x + amount * dx, y + amount * dy) for (x, y), dx, dy in zip(stroke, *drift, strict=True)
    ]


def draw_strokes(
    label: int, rng: np.random.Generator, width: float, page: int = PAGE
) -> tuple[np.ndarray, str]:
    """A pen-drawn ``label`` on a ``page`` x ``page`` field: ink in [0, 1] and its variant name.

    The digit's box is 70-80 % of the page high, slanted up to 0.3 and 0.7-1.1 times as wide as
    high; ``width`` is the pen's width as a fraction of the digit's height.
    """
    variants = SKELETONS[label]
    variant = int(rng.integers(len(variants)))
    height = rng.uniform(0.7, 0.8) * page
    aspect, slant = rng.uniform(0.7, 1.1), rng.uniform(-0.1, 0.3)
    wobble = rng.uniform(0.0, 0.03)
    scale = page * SUPERSAMPLE
    pen = max(1, round(width * height * SUPERSAMPLE))

    def place(point: Point) -> Point:
        x, y = point
        x = (x - 0.5) * aspect + slant * (0.5 - y)  # a right-handed slant leans the top right
        return (
            (0.5 * page + x * height) * SUPERSAMPLE,
            (0.5 * page + (y - 0.5) * height) * SUPERSAMPLE,
        )

    canvas = Image.new("L", (scale, scale), 0)
    draw = ImageDraw.Draw(canvas)
    for stroke in variants[variant]:
        points = [place(p) for p in _wobble(stroke, rng, wobble)]
        draw.line(points, fill=255, width=pen, joint="curve")
        for x, y in (points[0], points[-1]):  # round pen ends
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=255)
    ink = canvas.resize((page, page), Image.Resampling.BOX)
    return np.asarray(ink, dtype=np.float32) / 255.0, f"strokes/{label}{'abc'[variant]}"


# ----------------------------------------------------------------------------- fonts


def font_path(name: str) -> Path:
    """The file of one of matplotlib's own fonts, from its folder (never a system font of the
    same name); a clear error when this install lacks it."""
    import matplotlib

    fonts_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    if (fonts_dir / name).is_file():
        return fonts_dir / name
    raise FileNotFoundError(f"font {name} is not among matplotlib's fonts ({fonts_dir})")


def draw_text(
    label: int, font_name: str, rng: np.random.Generator, outline: float = 0.0, page: int = PAGE
) -> tuple[np.ndarray, str]:
    """``label`` typed in ``font_name``, its glyph 60-75 % of the page high, centred.

    ``outline`` thickens the glyph by that fraction of its height (PIL's stroke around it).
    """
    size = round(rng.uniform(0.6, 0.75) * page)
    font = ImageFont.truetype(str(font_path(font_name)), size * SUPERSAMPLE)
    canvas = Image.new("L", (page * SUPERSAMPLE, page * SUPERSAMPLE), 0)
    draw = ImageDraw.Draw(canvas)
    stroke = round(outline * size * SUPERSAMPLE)
    centre = page * SUPERSAMPLE / 2
    draw.text(
        (centre, centre),
        str(label),
        font=font,
        fill=255,
        anchor="mm",
        stroke_width=stroke,
        stroke_fill=255,
    )
    ink = canvas.resize((page, page), Image.Resampling.BOX)
    return np.asarray(ink, dtype=np.float32) / 255.0, f"font/{Path(font_name).stem}"
