"""Digits drawn with a pen, in the styles people write them: a skeleton per digit and style,
drawn as a mouse, a finger or a pen draws on a canvas.

A style (``STYLES``) is a function that, from a random generator, gives the strokes of one
digit in a unit box (x right, y down, the digit from y = 0 to 1): its own proportions drawn too
(a flag's length, a bar's height, a tail's curl). ``pointer_strokes`` places them on a canvas as
the points a pointer reports: a random size, position, slant, tilt and width-to-height ratio,
then each stroke walked at a random speed (the spacing of the points: a fast hand cuts corners)
with a slow wobble and jitter of the hand, and a random pen width. ``draw_canvas`` paints such
points as the page does (round caps and joins); ``mnist_digit`` draws them straight into the
28x28 format MNIST's digits have (fit in a 20x20 box, centre of mass at the centre), which is
what training mixes in (``data.pen_digits``, ``InMemoryBatches``).

Each digit comes from its own generator, ``rng(stream, *key)``: training draws from the
``TRAIN`` stream keyed by (seed, epoch, rank, batch, index), the held-apart check set
(``benchmarks/check_set.py``'s ``pen`` category) from ``CHECK`` keyed by (seed, index): different
seed sequences, so never the same draws, and a resumed run draws what an uninterrupted one did.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

Point = tuple[float, float]
Stroke = list[Point]

#: the first word of every generator's seed: which use a digit is drawn for
TRAIN, CHECK = 0x7A1, 0xC4E
#: strokes are painted this many times larger, then downsampled: antialiased edges
SUPERSAMPLE = 4


def rng(stream: int, *key: int) -> np.random.Generator:
    """The generator of one digit: ``stream`` (``TRAIN`` or ``CHECK``) and its key."""
    return np.random.default_rng([stream, *key])


# ----------------------------------------------------------------------------- skeletons


def arc(
    cx: float, cy: float, rx: float, ry: float, start: float, end: float, step: int = 6
) -> Stroke:
    """Points along an elliptical arc, about one every ``step`` degrees (at least ``step``
    points); angles in degrees, 0 to the right, 90 downwards."""
    steps = max(step, int(abs(end - start) / step))
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start, end, steps)
    ]


def bezier(p0: Point, p1: Point, p2: Point, steps: int = 16) -> Stroke:
    """A quadratic Bezier curve from ``p0`` to ``p2`` pulled towards ``p1``."""
    return [
        (
            (1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t**2 * p2[0],
            (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t**2 * p2[1],
        )
        for t in np.linspace(0, 1, steps)
    ]


Skeleton = Callable[[np.random.Generator], list[Stroke]]


@dataclass(frozen=True)
class Style:
    """One way of writing a digit: its name (``1-flag``), label and skeleton."""

    name: str
    label: int
    skeleton: Skeleton


def _zero_oval(r: np.random.Generator) -> list[Stroke]:
    start = r.uniform(-120, -60)  # near the top, drawn anticlockwise, ends past where it began
    return [arc(0.5, 0.5, 0.45, 0.5, start, start - r.uniform(350, 390))]


def _zero_clockwise(r: np.random.Generator) -> list[Stroke]:
    start = r.uniform(-110, -80)
    tilt = r.uniform(-0.06, 0.06)
    points = arc(0.5, 0.5, 0.42, 0.5, start, start + r.uniform(345, 375))
    return [[(x + tilt * (y - 0.5), y) for x, y in points]]


def _one_plain(r: np.random.Generator) -> list[Stroke]:
    return [[(0.5, 0.0), (0.5 + r.uniform(-0.04, 0.04), 1.0)]]


def _flag(r: np.random.Generator) -> Stroke:
    """A 1's stem with its flag: from the left and down (steeper than a 7's top), up to the top."""
    length = r.uniform(0.18, 0.35)
    return [(0.55 - length, length * r.uniform(0.7, 1.2)), (0.55, 0.0), (0.55, 1.0)]


def _one_flag(r: np.random.Generator) -> list[Stroke]:
    return [_flag(r)]


def _one_flag_foot(r: np.random.Generator) -> list[Stroke]:
    half = r.uniform(0.25, 0.4)
    return [_flag(r), [(0.55 - half, 1.0), (0.55 + half, 1.0)]]


def _two_plain(r: np.random.Generator) -> list[Stroke]:
    top = arc(0.5, 0.28, 0.4, 0.28, r.uniform(190, 210), r.uniform(360, 390))
    return [[*top, (0.05, 1.0), (r.uniform(0.85, 1.0), 1.0)]]


def _two_loop(r: np.random.Generator) -> list[Stroke]:
    top = arc(0.5, 0.28, 0.38, 0.28, 200, 370)
    loop = r.uniform(0.08, 0.16)
    return [
        top
        + bezier(top[-1], (0.55, 0.7), (0.18, 1.0 - loop))
        + arc(0.24, 1.0 - loop / 2, 0.1, loop / 2, -120, 120)
        + [(r.uniform(0.85, 1.0), 1.0)]
    ]


def _three_round(r: np.random.Generator) -> list[Stroke]:
    middle = r.uniform(0.42, 0.52)
    return [
        arc(0.47, middle / 2, 0.4, middle / 2, 200, 450)
        + arc(0.47, (1 + middle) / 2, 0.45, (1 - middle) / 2, -90, r.uniform(140, 170))
    ]


def _three_flat(r: np.random.Generator) -> list[Stroke]:
    middle = r.uniform(0.38, 0.48)
    return [
        [
            (0.08, 0.0),
            (0.9, 0.0),
            (0.4, middle),
            *arc(0.48, (1 + middle) / 2, 0.45, (1 - middle) / 2, -100, r.uniform(140, 165)),
        ]
    ]


def _four_closed(r: np.random.Generator) -> list[Stroke]:
    bar = r.uniform(0.6, 0.72)
    stem = r.uniform(0.62, 0.75)
    return [[(stem, 1.0), (stem, 0.0), (0.0, bar), (1.0, bar)]]


def _four_open(r: np.random.Generator) -> list[Stroke]:
    bar = r.uniform(0.55, 0.68)
    stem = r.uniform(0.62, 0.75)
    return [
        [(r.uniform(0.1, 0.3), 0.0), (0.02, bar), (1.0, bar)],
        [(stem, r.uniform(0.0, 0.3)), (stem, 1.0)],
    ]


def _five_two_strokes(r: np.random.Generator) -> list[Stroke]:
    waist = r.uniform(0.38, 0.48)
    return [
        [
            (0.22, 0.0),
            (0.16, waist),
            *arc(0.5, (1 + waist) / 2 + 0.02, 0.42, (1 - waist) / 2, -145, r.uniform(140, 165)),
        ],
        [(0.22, 0.0), (r.uniform(0.8, 0.98), r.uniform(-0.03, 0.03))],
    ]


def _five_one_stroke(r: np.random.Generator) -> list[Stroke]:
    waist = r.uniform(0.38, 0.48)
    return [
        [
            (r.uniform(0.8, 0.98), 0.0),
            (0.22, 0.0),
            (0.16, waist),
            *arc(0.5, (1 + waist) / 2 + 0.02, 0.42, (1 - waist) / 2, -145, r.uniform(140, 165)),
        ]
    ]


def _six_curved(r: np.random.Generator) -> list[Stroke]:
    loop = r.uniform(0.4, 0.5)
    return [
        bezier((r.uniform(0.7, 0.85), 0.0), (0.1, 0.25), (0.08, 1 - loop / 2))
        + arc(0.5, 1 - loop / 2, 0.42, loop / 2, 180, 540)
    ]


def _six_straight(r: np.random.Generator) -> list[Stroke]:
    loop = r.uniform(0.38, 0.48)
    return [
        [
            (r.uniform(0.6, 0.75), 0.0),
            (0.1, 1 - loop / 2),
            *arc(0.5, 1 - loop / 2, 0.4, loop / 2, 180, 530),
        ]
    ]


def _seven_plain(r: np.random.Generator) -> list[Stroke]:
    return [[(0.0, r.uniform(0.0, 0.06)), (1.0, 0.0), (r.uniform(0.3, 0.5), 1.0)]]


def _seven_short_top(r: np.random.Generator) -> list[Stroke]:
    """A narrow 7, as many of MNIST's are: a short top, near level (a 1's flag falls steeply to
    the left: ``_flag``), and a stem almost straight down."""
    corner = r.uniform(0.7, 0.9)
    top = [(corner - r.uniform(0.3, 0.55), r.uniform(0.0, 0.08)), (corner, 0.0)]
    return [[*top, (corner - r.uniform(0.0, 0.2), 1.0)]]


def _seven_bar(r: np.random.Generator) -> list[Stroke]:
    foot = r.uniform(0.3, 0.5)
    height = r.uniform(0.42, 0.58)
    crossing = 1.0 + (foot - 1.0) * height  # where the stem is at the bar's height
    return [
        [(0.0, r.uniform(0.0, 0.06)), (1.0, 0.0), (foot, 1.0)],
        [(crossing - r.uniform(0.22, 0.35), height), (crossing + r.uniform(0.2, 0.3), height)],
    ]


def _eight_loops(r: np.random.Generator) -> list[Stroke]:
    waist = r.uniform(0.4, 0.48)
    return [
        arc(0.5, waist / 2, 0.33, waist / 2, 90, 450),
        arc(0.5, (1 + waist) / 2, 0.43, (1 - waist) / 2, -90, 270),
    ]


def _eight_one_stroke(r: np.random.Generator) -> list[Stroke]:
    waist = r.uniform(0.42, 0.5)
    return [
        bezier((0.85, 0.1), (0.4, -0.12), (0.15, 0.18))
        + bezier((0.15, 0.18), (0.25, waist), (0.55, waist))
        + bezier((0.55, waist), (1.0, 0.7), (0.55, 1.0))
        + bezier((0.55, 1.0), (0.0, 0.95), (0.3, 0.65))
        + bezier((0.3, 0.65), (0.95, 0.35), (0.85, 0.1))
    ]


def _nine_loop(r: np.random.Generator, loop: float) -> Stroke:
    """A 9's loop, drawn from its right side anticlockwise, ``loop`` of the height."""
    return arc(0.5, loop / 2, 0.42, loop / 2, r.uniform(-10, 10), -360)


def _nine_straight(r: np.random.Generator) -> list[Stroke]:
    loop = r.uniform(0.4, 0.5)
    stroke = _nine_loop(r, loop)
    return [[*stroke, (0.92, loop / 2), (r.uniform(0.75, 0.92), 1.0)]]


def _nine_curved(r: np.random.Generator) -> list[Stroke]:
    loop = r.uniform(0.4, 0.5)
    stroke = _nine_loop(r, loop)
    return [stroke + bezier((0.92, loop / 2), (0.92, 0.95), (r.uniform(0.2, 0.4), 1.0))]


#: every style, in digit order; each digit has two or more
STYLES: tuple[Style, ...] = (
    Style("0-anticlockwise", 0, _zero_oval),
    Style("0-clockwise", 0, _zero_clockwise),
    Style("1-plain", 1, _one_plain),
    Style("1-flag", 1, _one_flag),
    Style("1-flag-foot", 1, _one_flag_foot),
    Style("2-plain", 2, _two_plain),
    Style("2-loop", 2, _two_loop),
    Style("3-round", 3, _three_round),
    Style("3-flat-top", 3, _three_flat),
    Style("4-closed", 4, _four_closed),
    Style("4-open", 4, _four_open),
    Style("5-two-strokes", 5, _five_two_strokes),
    Style("5-one-stroke", 5, _five_one_stroke),
    Style("6-curved", 6, _six_curved),
    Style("6-straight", 6, _six_straight),
    Style("7-plain", 7, _seven_plain),
    Style("7-bar", 7, _seven_bar),
    Style("7-short-top", 7, _seven_short_top),
    Style("8-two-loops", 8, _eight_loops),
    Style("8-one-stroke", 8, _eight_one_stroke),
    Style("9-straight-tail", 9, _nine_straight),
    Style("9-curved-tail", 9, _nine_curved),
)
STYLE_NAMES = tuple(style.name for style in STYLES)
_BY_NAME = {style.name: style for style in STYLES}


def style(name: str) -> Style:
    """The style called ``name``; a clear error names the styles there are."""
    if name not in _BY_NAME:
        raise ValueError(f"no pen style {name!r}: one of {', '.join(STYLE_NAMES)}")
    return _BY_NAME[name]


# ----------------------------------------------------------------------------- a hand drawing


@dataclass(frozen=True)
class Drawing:
    """One digit as a pointer draws it on a ``size`` x ``size`` canvas: its strokes (each the
    points the pointer reported, in canvas pixels), the pen's width in pixels, its style."""

    strokes: list[Stroke]
    width: float
    style: Style
    size: int


def _walk(stroke: Stroke, spacing: float, r: np.random.Generator) -> np.ndarray:
    """The points a pointer reports along ``stroke``: every ``spacing`` (give or take a third)
    of its length, its ends kept. A corner between two reports is cut, as a fast hand cuts it."""
    points = np.asarray(stroke, dtype=np.float64)
    lengths = np.r_[0.0, np.cumsum(np.hypot(*np.diff(points, axis=0).T))]
    total = lengths[-1]
    if total == 0:
        return points[:1]
    steps = spacing * r.uniform(0.67, 1.33, int(total / spacing * 1.5) + 2)
    along = np.cumsum(np.r_[0.0, steps])
    along = np.r_[along[along < total], total]
    return np.stack(
        [np.interp(along, lengths, points[:, 0]), np.interp(along, lengths, points[:, 1])], 1
    )


def _wobble(count: int, r: np.random.Generator) -> np.ndarray:
    """A hand's slow drift along a stroke of ``count`` points: ``[count, 2]``, within [-1, 1]."""
    t = np.linspace(0, 1, count)[:, None]
    phase, frequency = r.uniform(0, 2 * math.pi, (2, 2)), r.uniform(0.3, 1.5, (2, 2))
    return (
        np.sin(2 * math.pi * frequency[None, 0] * t + phase[None, 0])
        + np.sin(2 * math.pi * frequency[None, 1] * t + phase[None, 1])
    ) / 2


def pointer_strokes(drawing_style: Style, r: np.random.Generator, size: int = 280) -> Drawing:
    """``drawing_style`` drawn by a hand on a ``size``-pixel canvas, all of it inside.

    The digit is 40-85 % of the canvas high, 0.55-1.1 times as wide as high (a 1 keeps its own
    narrowness), slanted -0.15 to 0.35 (a right hand leans the top right), tilted up to 8
    degrees; the pen is 5-20 % of the digit's height wide; points come every 2-12 % of the
    height with a wobble of up to 3 % and a jitter of up to 1 %.
    """
    height = r.uniform(0.4, 0.85) * size
    aspect = r.uniform(0.55, 1.1)
    slant = r.uniform(-0.15, 0.35)
    tilt = math.radians(r.uniform(-8, 8))
    width = r.uniform(0.05, 0.2) * height
    spacing = r.uniform(0.02, 0.12) * height
    wobble, jitter = r.uniform(0, 0.03) * height, r.uniform(0, 0.01) * height
    cos, sin = math.cos(tilt), math.sin(tilt)
    placed = []
    for stroke in drawing_style.skeleton(r):
        unit = np.asarray(stroke, dtype=np.float64)
        x = (unit[:, 0] - 0.5) * aspect + slant * (0.5 - unit[:, 1])
        y = unit[:, 1] - 0.5
        xy = np.stack([x * cos - y * sin, x * sin + y * cos], 1) * height
        xy = _walk([(float(a), float(b)) for a, b in xy], spacing, r)
        xy = xy + wobble * _wobble(len(xy), r) + r.normal(0, jitter + 1e-9, xy.shape)
        placed.append(xy)
    ink = np.concatenate(placed)
    low, high = ink.min(0) - width / 2, ink.max(0) + width / 2
    room = np.maximum(size - (high - low), 0)  # a random place where the whole digit fits
    offset = -low + r.uniform(0, 1, 2) * room
    strokes = [[(float(a), float(b)) for a, b in xy + offset] for xy in placed]
    return Drawing(strokes, float(width), drawing_style, size)


def _paint(strokes: Sequence[Stroke], width: float, size: int, scale: float) -> np.ndarray:
    """Strokes painted white on black, ``scale`` times larger, downsampled to ``size``: [0, 1]."""
    canvas = Image.new("L", (round(size * scale),) * 2, 0)
    draw = ImageDraw.Draw(canvas)
    pen = max(1.0, width * scale)
    for stroke in strokes:
        points = [(x * scale, y * scale) for x, y in stroke]
        if len(points) > 1:
            draw.line(points, fill=255, width=round(pen), joint="curve")
        for x, y in (points[0], points[-1]):  # round caps, as the page's lineCap "round"
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=255)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


def draw_canvas(drawing: Drawing) -> np.ndarray:
    """The canvas after ``drawing``, as the page paints it: white ink on black, [0, 1]."""
    return _paint(drawing.strokes, drawing.width, drawing.size, SUPERSAMPLE)


def mnist_digit(drawing: Drawing, box: int = 20, size: int = 28) -> np.ndarray:
    """``drawing`` as MNIST's digits are: its ink fit in a ``box`` x ``box`` square (aspect
    kept), the centre of mass moved to the centre of ``size`` x ``size`` by whole pixels;
    uint8, light on black. Painted straight at that size, with no canvas in between."""
    ink = np.concatenate([np.asarray(s) for s in drawing.strokes])
    low = ink.min(0) - drawing.width / 2
    extent = float((ink.max(0) - ink.min(0) + drawing.width).max())
    fit = box / extent
    margin = (size - box) / 2
    strokes = [
        [((x - low[0]) * fit + margin, (y - low[1]) * fit + margin) for x, y in s]
        for s in drawing.strokes
    ]
    pixels = _paint(strokes, drawing.width * fit, size, SUPERSAMPLE)
    total = max(float(pixels.sum()), 1e-12)
    rows, cols = np.arange(size), np.arange(size)
    shift_row = round(size // 2 - float(pixels.sum(1) @ rows) / total)
    shift_col = round(size // 2 - float(pixels.sum(0) @ cols) / total)
    # as MNIST's, the digit stays whole: a 7, heavy at the top, moves only as far as it can
    rows_inked, cols_inked = np.flatnonzero(pixels.any(1)), np.flatnonzero(pixels.any(0))
    shift_row = min(max(shift_row, -int(rows_inked[0])), size - 1 - int(rows_inked[-1]))
    shift_col = min(max(shift_col, -int(cols_inked[0])), size - 1 - int(cols_inked[-1]))
    pixels = np.roll(pixels, (shift_row, shift_col), axis=(0, 1))
    return np.round(pixels * 255).astype(np.uint8)


def training_digits(
    count: int, seed: int, epoch: int, rank: int, batch: int
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` pen digits for one training batch: ``[count, 28, 28]`` uint8 and their labels.

    Digit ``i`` is drawn from ``rng(TRAIN, seed, epoch, rank, batch, i)`` alone; its label is
    uniform over 0-9, its style uniform over that digit's styles.
    """
    images = np.empty((count, 28, 28), np.uint8)
    labels = np.empty(count, np.int64)
    for index in range(count):
        generator = rng(TRAIN, seed, epoch, rank, batch, index)
        label = int(generator.integers(10))
        choices = [s for s in STYLES if s.label == label]
        chosen = choices[int(generator.integers(len(choices)))]
        images[index] = mnist_digit(pointer_strokes(chosen, generator, size=112))
        labels[index] = label
    return images, labels
