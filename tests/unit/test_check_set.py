"""The check set generator (``benchmarks/check_set.py``): labels, categories, determinism, no
MNIST."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_lit.config import PROJECT_ROOT

# the check set is the robustness benchmark's, beside it in benchmarks/, not the package's
sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import check_set
from check_set import CATEGORIES, generate, read_labels, sample
from digit_drawing import CHECK_FONTS, font_path

from mnist_lit.data import pen_digits


@pytest.mark.parametrize("category", CATEGORIES)
def test_each_category_draws_a_labelled_digit(category: str) -> None:
    for index in (0, 7, 13):
        item = sample(category, index, seed=0)
        if category == "pen":  # the styles in turn, each its digit's
            style = pen_digits.STYLES[index % len(pen_digits.STYLES)]
            assert item.label == style.label and item.source == f"pen/{style.name}"
        else:
            assert item.label == index % 10 and item.source.startswith(("strokes/", "font/"))
        assert item.category == category
        assert item.pixels.dtype == np.uint8 and item.pixels.ndim in (2, 3)
        assert item.pixels.shape[0] >= 10 and item.pixels.shape[0] == item.pixels.shape[1]
        # ink and paper both present: a digit, not a blank page
        gray = item.pixels if item.pixels.ndim == 2 else item.pixels.mean(axis=2)
        assert gray.max() - gray.min() > 60


def test_a_sample_depends_on_seed_category_and_index_alone() -> None:
    one = sample("rotated", 5, seed=1)
    assert np.array_equal(one.pixels, sample("rotated", 5, seed=1).pixels)
    assert not np.array_equal(one.pixels, sample("rotated", 5, seed=2).pixels)
    assert not np.array_equal(one.pixels, sample("rotated", 15, seed=1).pixels)


def test_generate_writes_pngs_and_labels(tmp_path) -> None:
    labels = generate(tmp_path / "set", per_category=3, seed=0, categories=["font", "scan"])
    rows = read_labels(tmp_path / "set")
    assert labels == tmp_path / "set" / "labels.csv"
    assert [r["category"] for r in rows] == ["font"] * 3 + ["scan"] * 3
    assert [int(r["label"]) for r in rows] == [0, 1, 2, 0, 1, 2]
    with open(labels, newline="") as f:
        assert next(csv.reader(f)) == ["file", "label", "category", "source"]
    for row in rows:
        assert (tmp_path / "set" / row["file"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_same_seed_gives_the_same_files_and_a_smaller_set_is_a_prefix(tmp_path) -> None:
    generate(tmp_path / "a", per_category=4, seed=3, categories=["thick", "lowres"])
    generate(tmp_path / "b", per_category=2, seed=3, categories=["thick", "lowres"])
    generate(tmp_path / "c", per_category=2, seed=4, categories=["thick", "lowres"])
    for row in read_labels(tmp_path / "b"):
        same = (tmp_path / "a" / row["file"]).read_bytes()
        assert (tmp_path / "b" / row["file"]).read_bytes() == same
    differs = [
        (tmp_path / "b" / r["file"]).read_bytes() != (tmp_path / "c" / r["file"]).read_bytes()
        for r in read_labels(tmp_path / "b")
    ]
    assert all(differs)


def test_it_never_reads_mnist(tmp_path, monkeypatch) -> None:
    """Generated from nothing but fonts and strokes: no data dir is needed or opened."""
    opened: list[str] = []
    real_open = open

    def watching_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", watching_open)
    monkeypatch.chdir(tmp_path)
    generate(tmp_path / "set", per_category=1, seed=0)
    # MNIST's files end in idx3-ubyte, idx1-ubyte (a temporary name's random part may hold idx)
    assert not [path for path in opened if "MNIST" in path or "-ubyte" in path]


def test_check_fonts_are_matplotlibs_own_files_not_dejavu() -> None:
    """Not the DejaVu files a system has (and a user types in): STIX and Computer Modern, read
    from matplotlib's folder even where a system font has the same name."""
    import matplotlib

    for name in CHECK_FONTS:
        assert font_path(name).is_file()
        assert font_path(name).parent.parent.parent == Path(matplotlib.get_data_path())
        assert "dejavu" not in name.lower()


def test_the_pen_category_holds_each_style_per_style_times(tmp_path) -> None:
    generate(tmp_path / "set", per_category=1, seed=0, categories=["pen", "font"], per_style=2)
    rows = read_labels(tmp_path / "set")
    pen = [r for r in rows if r["category"] == "pen"]
    assert len(pen) == 2 * len(pen_digits.STYLES)
    counts = {s.name: sum(r["source"] == f"pen/{s.name}" for r in pen) for s in pen_digits.STYLES}
    assert set(counts.values()) == {2}


def test_the_pen_category_is_drawn_from_the_check_stream_not_trainings() -> None:
    """Held apart: image i is drawn from ``rng(CHECK, seed, i)``; training's digits come from
    ``rng(TRAIN, ...)``, another seed sequence, so no drawing is shared."""
    style = pen_digits.STYLES[3]
    check = pen_digits.pointer_strokes(style, pen_digits.rng(pen_digits.CHECK, 0, 3))
    light_on_dark = np.round(pen_digits.draw_canvas(check) * 255)
    pixels = sample("pen", 3, seed=0).pixels.astype(np.float32)
    assert np.abs(pixels - light_on_dark).max() <= 1 or (
        np.abs(pixels - (255 - light_on_dark)).max() <= 1
    )
    train = pen_digits.pointer_strokes(style, pen_digits.rng(pen_digits.TRAIN, 0, 3))
    assert train.strokes != check.strokes


def test_command_line(tmp_path, capsys) -> None:
    done = check_set.main(["--out", str(tmp_path / "s"), "--per-category", "1", "--per-style", "1"])
    assert done == 0
    assert len(read_labels(tmp_path / "s")) == len(CATEGORIES) - 1 + len(pen_digits.STYLES)
    assert check_set.main(["--out", str(tmp_path / "t"), "--categories", "font,nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "t" / "labels.csv").exists()
