"""The page at ``/`` in a real browser: Debian's headless ``chromium`` driven by Playwright.

Digits are drawn as mouse strokes on the canvas, and the label the page shows is read; another
test uploads a file; on a phone-sized screen a digit is drawn with touch events, and the square,
the guess and the 28x28 input must fit the screen. The drawing tests also save screenshots of
the page to ``docs/images/serve.png`` (the README's picture) and ``serve-phone.png``. Skipped,
with the reason, where chromium or the ``playwright`` package is missing (``apt-get install
chromium``, ``pip install playwright``: Playwright's own browser download is not needed).
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lit.config import PROJECT_ROOT
from mnist_lit.errors import atomic_write_bytes

from .served import browser, mnist_onnx, served_url

__all__ = ["browser", "mnist_onnx", "served_url"]  # fixtures, used by name

SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "serve.png"
PHONE_SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "serve-phone.png"

Stroke = list[tuple[float, float]]  # points in the canvas, 0..1 across and down


def arc(
    cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 24
) -> Stroke:
    """Points along an ellipse from angle ``start`` to ``end`` (degrees; 0 is right, 90 down)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in np.linspace(start, end, n)
    ]


#: each digit as a person draws it with a mouse: one or more strokes
DIGITS: dict[int, list[Stroke]] = {
    0: [arc(0.5, 0.5, 0.2, 0.32, -90, 275, 40)],
    1: [[(0.5, 0.15), (0.5, 0.85)]],
    2: [[*arc(0.5, 0.34, 0.2, 0.18, 190, 360), (0.62, 0.52), (0.3, 0.82), (0.76, 0.82)]],
    4: [[(0.6, 0.15), (0.26, 0.6), (0.78, 0.6)], [(0.62, 0.36), (0.62, 0.88)]],
    7: [[(0.26, 0.2), (0.74, 0.2), (0.42, 0.86)]],
    3: [arc(0.5, 0.32, 0.18, 0.16, 200, 450) + arc(0.5, 0.66, 0.2, 0.18, -90, 160)],
}


@pytest.fixture
def page_errors() -> list[str]:
    """What the page reported as errors (a test that expects one removes it)."""
    return []


@pytest.fixture
def page(browser, served_url: str, page_errors: list[str]) -> Iterator:
    page = browser.new_page(viewport={"width": 960, "height": 660})
    errors = page_errors
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(served_url)
    page.wait_for_selector("body[data-ready=true]")
    yield page
    page.close()
    assert errors == [], errors  # no script error, nothing the page failed to load


def answered(page) -> None:
    """Wait until the guess shown is the answer to the last request the page sent."""
    page.wait_for_function("document.body.dataset.answered === document.body.dataset.sent")


def draw(page, strokes: list[Stroke]) -> None:
    """Draw ``strokes`` with the mouse; each stroke's end sends the drawing."""
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=4)
        with page.expect_request("**/predict"):
            page.mouse.up()
    answered(page)


def shown(page) -> dict:
    """What the page shows: the label, the ten bars' widths and the 28x28 input's pixels."""
    return page.evaluate(
        """() => ({
            label: document.getElementById("guess").dataset.label,
            text: document.getElementById("guess").textContent,
            bars: [...document.querySelectorAll("#bars .bar-fill")]
                .map(b => parseFloat(b.style.width)),
            ink: Array.from(document.getElementById("input28").getContext("2d")
                .getImageData(0, 0, 28, 28).data).filter((v, i) => i % 4 === 0 && v > 0).length,
            message: document.getElementById("message").textContent,
        })"""
    )


def test_digits_drawn_with_the_mouse_are_read(page) -> None:
    read = {}
    for digit, strokes in DIGITS.items():
        page.click("#clear")
        draw(page, strokes)
        now = shown(page)
        read[digit] = now["label"]
        assert len(now["bars"]) == 10 and max(now["bars"]) > 50  # percent of the bar's track
        assert now["ink"] > 20  # the 28x28 input the model received is drawn
        assert now["message"] == ""
    assert read == {digit: str(digit) for digit in DIGITS}
    atomic_write_bytes(SCREENSHOT, page.screenshot())  # the last digit, for the README


def test_clear_empties_the_pad_and_the_answer(page) -> None:
    draw(page, DIGITS[1])
    page.click("#clear")
    assert shown(page)["label"] == ""
    assert shown(page)["bars"] == [0] * 10
    blank = page.evaluate(
        """() => Array.from(document.getElementById("pad").getContext("2d")
            .getImageData(0, 0, 280, 280).data).some((v, i) => i % 4 !== 3 && v !== 0)"""
    )
    assert blank is False


def test_an_uploaded_file_is_read(page, mnist_data_dir: Path, tmp_path: Path) -> None:
    raw = mnist_data_dir / "MNIST" / "raw"
    digit = read_image_file(str(raw / "t10k-images-idx3-ubyte"))[0].numpy()
    label = int(read_label_file(str(raw / "t10k-labels-idx1-ubyte"))[0])
    # a scan-like file: dark ink on white paper, large, off-centre, JPEG
    paper = Image.new("L", (400, 300), 255)
    paper.paste(ImageOps.invert(Image.fromarray(digit).resize((168, 168))), (40, 70))
    path = tmp_path / "scan.jpg"
    buffer = io.BytesIO()
    paper.save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue())
    with page.expect_request("**/predict"):
        page.set_input_files("#upload", str(path))
    answered(page)
    assert shown(page)["label"] == str(label)


def test_a_file_that_is_no_image_shows_the_servers_reason(
    page, page_errors: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "notes.png"
    path.write_text("not an image\n")
    with page.expect_request("**/predict"):
        page.set_input_files("#upload", str(path))
    answered(page)
    assert shown(page)["message"].startswith("not an image")
    assert shown(page)["label"] == ""
    # the browser's own line for the 400 the page was answered
    page_errors.remove(
        "Failed to load resource: the server responded with a status of 400 (Bad Request)"
    )


PHONE = {"width": 390, "height": 844}  # CSS pixels of a common phone's screen


def touch_draw(page, strokes: list[Stroke]) -> None:
    """Draw ``strokes`` with a finger: touch events sent through the Chrome DevTools Protocol
    (Playwright's ``touchscreen`` only taps); each stroke's end sends the drawing."""
    cdp = page.context.new_cdp_session(page)
    box = page.locator("#pad").bounding_box()
    for stroke in strokes:
        points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        kinds = ["touchStart"] + ["touchMove"] * (len(points) - 1)
        for kind, (x, y) in zip(kinds, points, strict=True):
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y}]})
        with page.expect_request("**/predict"):
            cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    answered(page)
    cdp.detach()


def test_on_a_phone_the_pad_the_guess_and_the_input_fit_one_screen(
    browser, served_url: str
) -> None:
    """At 390x844 with touch, a digit drawn with a finger: the square, the guess and the 28x28
    input all lie inside the screen, nothing scrolled and nothing wider than the screen."""
    context = browser.new_context(
        viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=3
    )
    page = context.new_page()
    try:
        page.goto(served_url)
        page.wait_for_selector("body[data-ready=true]")
        touch_draw(page, DIGITS[7])
        assert shown(page)["label"] == "7"
        assert page.evaluate("() => [window.scrollX, window.scrollY]") == [0, 0]
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        for part in ("#pad", "#guess", "#input28"):
            box = page.locator(part).bounding_box()
            assert box is not None and box["width"] > 0, part
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (part, box)
            assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"], (part, box)
        atomic_write_bytes(PHONE_SCREENSHOT, page.screenshot())  # docs/serving.md's picture
    finally:
        context.close()
