"""The server's API in-process (FastAPI's TestClient, no socket): answers, every bad input and
that the server keeps answering after each, and the page's files. (How ``serve.py`` finds the
model and checks its config: test_serve_command.py; the real server under load, and the page in
a browser: tests/integration/test_serve.py and test_page.py.)
"""

from __future__ import annotations

import base64
import dataclasses
import io
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from mnist_lit.export.predictors import Predictor, load_predictor
from mnist_lit.serving.inputs import Limits
from mnist_lit.serving.server import STATIC_DIR, create_app

from .conftest import edited, set_dataset

with warnings.catch_warnings():  # Starlette 1.x asks for httpx2 under it; httpx works the same
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

LIMITS = Limits(
    max_body_bytes=200_000, max_pixels=1_000_000, max_batch=4, max_request_pixels=2_500_000
)


def png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def stroke_image(size: int = 200, dark_on_light: bool = True) -> Image.Image:
    """A thick vertical stroke, as drawn on a canvas or on paper."""
    paper, ink = (255, 0) if dark_on_light else (0, 255)
    image = Image.new("L", (size, size), paper)
    ImageDraw.Draw(image).line([(size // 2, size // 6), (size // 2, size * 5 // 6)], ink, 14)
    return image


DIGIT = png(stroke_image())
BLANK = png(Image.new("L", (280, 280), 0))


@pytest.fixture(scope="module")
def predictor(tiny_ckpts: dict) -> Predictor:
    return load_predictor(tiny_ckpts["full"])


@pytest.fixture
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor, LIMITS)) as test_client:
        yield test_client


def still_answers(client: TestClient) -> None:
    """After a bad request: health and a good prediction are answered as before."""
    assert client.get("/health").status_code == 200
    response = client.post("/predict", content=DIGIT, headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text


# ----------------------------------------------------------------------------- answers


def test_health_names_the_model_its_classes_and_the_limits(client: TestClient, tiny_ckpts) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["source"] == str(tiny_ckpts["full"])
    assert health["dataset"] == "mnist"
    assert health["classes"] == [str(k) for k in range(10)]
    assert health["limits"] == {
        "max_body_bytes": 200_000,
        "max_pixels": 1_000_000,
        "max_batch": 4,
        "max_request_pixels": 2_500_000,
    }


def test_one_image_answers_label_class_probabilities_top3_and_the_input(
    client: TestClient, predictor: Predictor
) -> None:
    answer = client.post("/predict", content=DIGIT, headers={"Content-Type": "image/png"}).json()
    # exactly the shared preprocessing and model: what predict.py computes for the same file
    pixels = predictor.prepare(DIGIT)
    expected = predictor.probabilities(pixels[None])[0]
    assert answer["probabilities"] == pytest.approx(expected.tolist(), abs=1e-6)
    assert answer["label"] == int(np.argmax(expected))
    assert answer["class"] == predictor.classes[answer["label"]]
    assert answer["probability"] == pytest.approx(expected.max(), abs=1e-6)
    assert [t["label"] for t in answer["top"]] == np.argsort(-expected)[:3].tolist()
    assert [t["class"] for t in answer["top"]] == [
        predictor.classes[t["label"]] for t in answer["top"]
    ]
    assert answer["input"] == np.rint(pixels[0] * 255).astype(int).tolist()
    assert np.array(answer["input"]).shape == (28, 28)


def test_every_way_of_sending_one_image_gives_the_same_answer(client: TestClient) -> None:
    raw = client.post("/predict", content=DIGIT, headers={"Content-Type": "image/png"}).json()
    octets = client.post("/predict", content=DIGIT).json()  # no or any content type: the bytes
    # what `curl --data-binary @digit.png` sends when no Content-Type is given
    curl = client.post(
        "/predict", content=DIGIT, headers={"Content-Type": "application/x-www-form-urlencoded"}
    ).json()
    form = client.post("/predict", files={"file": ("digit.png", DIGIT, "image/png")}).json()
    encoded = base64.b64encode(DIGIT).decode()
    as_json = client.post("/predict", json={"image": encoded}).json()
    data_url = client.post("/predict", json={"image": f"data:image/png;base64,{encoded}"}).json()
    assert raw == octets == curl == form == as_json == data_url


def test_jpeg_and_light_on_dark_images_are_read(client: TestClient) -> None:
    jpeg = png(stroke_image(dark_on_light=True).convert("RGB"), "JPEG")
    light_on_dark = png(stroke_image(dark_on_light=False))
    for data in (jpeg, light_on_dark):
        response = client.post("/predict", content=data)
        assert response.status_code == 200, response.text
        assert len(response.json()["probabilities"]) == 10


def test_a_batch_answers_each_image_in_order_and_names_the_bad_ones(client: TestClient) -> None:
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate([DIGIT, BLANK])]
    files.append(("files", ("notes.png", b"not an image", "image/png")))
    answers = client.post("/predict", files=files).json()["predictions"]
    assert len(answers) == 3
    assert answers[0]["label"] == client.post("/predict", content=DIGIT).json()["label"]
    assert answers[1]["error"].startswith("no digit found")
    assert answers[2]["error"].startswith("not an image")
    as_json = client.post(
        "/predict", json={"images": [base64.b64encode(d).decode() for d in (DIGIT, DIGIT)]}
    ).json()["predictions"]
    assert as_json[0] == as_json[1] == answers[0]


def test_fashion_mnist_checkpoints_answer_with_their_class_names(
    tiny_ckpts: dict, tmp_path: Path
) -> None:
    fashion = edited(
        tiny_ckpts["full"], tmp_path / "f.ckpt", lambda c: set_dataset(c, "fashion_mnist")
    )
    with TestClient(create_app(load_predictor(fashion), LIMITS)) as client:
        assert client.get("/health").json()["classes"][0] == "T-shirt/top"
        answer = client.post("/predict", content=DIGIT).json()
    assert answer["class"] not in [str(k) for k in range(10)]
    assert all(not t["class"].isdigit() for t in answer["top"])


# ----------------------------------------------------------------------------- bad input


def bomb() -> bytes:
    """A PNG of 1,100 x 1,000 pixels (over LIMITS' million) in a few kB: its header says so."""
    return png(Image.new("L", (1_100, 1_000), 0))


def huge_bomb() -> bytes:
    """20,000 x 20,000 pixels, so many that PIL itself refuses to open it, in under 1 MB."""
    return png(Image.new("1", (20_000, 20_000), 0))


def chunks(data: bytes, size: int = 65_536) -> Iterator[bytes]:
    """A body sent in pieces without a Content-Length, as a streaming client sends it."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


BAD = {
    # name: (request keyword arguments, status, start of the error line)
    "not an image": (dict(content=b"hello, I am text"), 400, "not an image"),
    "empty body": (dict(content=b""), 400, "the request has no body"),
    "truncated PNG": (dict(content=DIGIT[: len(DIGIT) // 2]), 400, "the image is truncated"),
    "blank canvas": (dict(content=BLANK), 400, "no digit found"),
    "body over the limit": (dict(content=b"\0" * 200_001), 413, "the request body is over"),
    "malformed JSON": (
        dict(content=b'{"image": ', headers={"Content-Type": "application/json"}),
        400,
        "malformed JSON",
    ),
    # json.loads raises RecursionError, not ValueError, for JSON nested this deep
    "JSON nested 100,000 deep": (
        dict(content=b"[" * 100_000, headers={"Content-Type": "application/json"}),
        400,
        "malformed JSON",
    ),
    "JSON image nested 100,000 deep": (
        dict(content=b'{"image": ' + b"[" * 100_000, headers={"Content-Type": "application/json"}),
        400,
        "malformed JSON",
    ),
    "JSON of another shape": (dict(json={"picture": "x"}), 400, "JSON must be"),
    "JSON image not a string": (dict(json={"images": [3]}), 400, "images[0] is not a base64"),
    # each error names the key that was sent
    "JSON image not base64": (dict(json={"image": "#!?"}), 400, "image is not valid base64"),
    "JSON images[1] not base64": (
        dict(json={"images": [base64.b64encode(DIGIT).decode(), "#!?"]}),
        400,
        "images[1] is not valid base64",
    ),
    "form without a boundary": (
        dict(content=b"x", headers={"Content-Type": "multipart/form-data"}),
        400,
        "malformed form data",
    ),
    "form cut short before its file": (
        dict(
            content=b'--xx\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n',
            headers={"Content-Type": "multipart/form-data; boundary=xx"},
        ),
        400,
        "the form has no file",
    ),
    "form with no file": (dict(files={"note": (None, "hello")}), 400, "the form has no file"),
    "batch over the limit": (
        dict(json={"images": [base64.b64encode(DIGIT).decode()] * 5}),
        400,
        "5 images in one request, over the limit of 4",
    ),
    "form batch over the limit": (
        dict(files=[("f", (f"{i}.png", DIGIT, "image/png")) for i in range(5)]),
        400,
        "malformed form data",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_and_the_server_goes_on(client: TestClient, name: str) -> None:
    kwargs, status, start = BAD[name]
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error.startswith(start), error
    assert "\n" not in error and "Traceback" not in error
    still_answers(client)


def test_an_image_over_the_pixel_limit_is_refused_from_its_header(client: TestClient) -> None:
    data = bomb()
    assert len(data) < LIMITS.max_body_bytes
    response = client.post("/predict", content=data)
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        "the image is 1100x1000, over the limit of 1,000,000 pixels"
    )
    still_answers(client)


def test_images_over_the_pixel_limit_of_a_request_in_all_are_413(client: TestClient) -> None:
    # each at the limit of one image, three of them over the limit of a request: refused from
    # their headers before any is decoded
    big = png(stroke_image(size=1_000))
    files = [("files", (f"{i}.png", big, "image/png")) for i in range(3)]
    response = client.post("/predict", files=files)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error.startswith("the request's images have 3,000,000 pixels in all, over the limit")
    assert "\n" not in error
    # two are under it
    answers = client.post("/predict", files=files[:2]).json()["predictions"]
    assert [a["label"] for a in answers] == [answers[0]["label"]] * 2
    still_answers(client)


def test_the_model_runs_off_the_event_loop(predictor: Predictor) -> None:
    """While a batch is being classified, health and a one-image request are answered: the
    batch's model call waits, holding its thread, until the test has had both answers."""
    inside, release = threading.Event(), threading.Event()
    released: list[bool] = []

    def run(pixels: np.ndarray) -> np.ndarray:
        if len(pixels) > 1:  # the batch: wait (bounded, so a failing test ends)
            inside.set()
            released.append(release.wait(timeout=60))
        return predictor.run(pixels)

    blocking = dataclasses.replace(predictor, run=run)
    with TestClient(create_app(blocking, LIMITS)) as client:
        batch: list[int] = []
        files = [("files", (f"{i}.png", DIGIT, "image/png")) for i in range(2)]
        sender = threading.Thread(
            target=lambda: batch.append(client.post("/predict", files=files).status_code)
        )
        sender.start()
        try:
            assert inside.wait(timeout=60), "the batch never reached the model"
            assert client.get("/health").status_code == 200
            assert client.post("/predict", content=DIGIT).status_code == 200
        finally:
            release.set()
            sender.join(timeout=120)
    # the batch was still waiting when the others were answered, and was then answered too
    assert released == [True] and batch == [200]


def test_a_huge_bomb_that_pil_refuses_to_open_is_400(predictor: Predictor) -> None:
    data = huge_bomb()
    limits = Limits(max_body_bytes=len(data) + 1, max_pixels=1_000_000, max_batch=4)
    with TestClient(create_app(predictor, limits)) as client:
        response = client.post("/predict", content=data)
        assert response.status_code == 400
        assert response.json()["error"].startswith("the image is far too large")
        still_answers(client)


def test_a_body_streamed_without_a_length_is_cut_off_at_the_limit(client: TestClient) -> None:
    response = client.post("/predict", content=chunks(b"\0" * 1_000_000))
    assert response.status_code == 413
    assert response.json()["error"].startswith("the request body is over 200,000 bytes")
    still_answers(client)


def test_other_routes_and_methods_answer_json_errors(client: TestClient) -> None:
    assert client.get("/nowhere").status_code == 404
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.get("/docs").status_code == 404  # FastAPI's page would load a CDN's scripts
    assert client.get("/predict").status_code == 405
    assert client.put("/predict", content=DIGIT).status_code == 405
    still_answers(client)


# ----------------------------------------------------------------------------- the page


def test_the_page_and_its_files_are_served_and_load_nothing_from_elsewhere(
    client: TestClient,
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for path in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert client.get(path).status_code == 200, path
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC_DIR / name).read_text()
        # no CDN, web font or script from another site: the page works offline
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
        assert "@import" not in text and "url(http" not in text


def test_the_page_draws_with_pointer_events_and_sends_on_stroke_end() -> None:
    script = (STATIC_DIR / "app.js").read_text()
    for event in ("pointerdown", "pointermove", "pointerup", "pointercancel"):
        assert f'"{event}"' in script  # mouse, touch and pen alike
    assert "touch-action: none" in (STATIC_DIR / "style.css").read_text()
