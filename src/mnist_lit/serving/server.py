"""The served model: a FastAPI app run by uvicorn, and the page at ``/``.

- ``POST /predict``: one image as the raw body (``Content-Type: image/png``, ``image/jpeg`` or
  ``application/octet-stream``), or one or more as multipart form files, or as JSON
  ``{"image": "<base64>"}`` / ``{"images": ["<base64>", ...]}``. One image answers one result;
  several (or ``images``) answer ``{"predictions": [...]}``, each a result or ``{"error": ...}``.
  A result: ``label``, ``class``, ``probability``, every class's ``probabilities``, the ``top``
  3 and ``input``, the 28x28 image the model received (0-255 rows, as the page shows it).
- ``GET /health``: the model served, its classes and the limits.
- ``GET /``: ``static/index.html``, a canvas to draw on (no file from another site).

Every image goes through ``Predictor.prepare``, the very preprocessing of ``predict.py``. Bad
input is answered, never raised: a body over ``max_body_bytes`` is 413 before it is read; not
an image, too many pixels, no digit, malformed JSON or form data is 400 with ``{"error": "<one
line>"}``. Each worker process runs its requests one at a time on the event loop: preparing and
classifying an image takes about a millisecond, less than handing it to a thread would.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import socket
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from omegaconf import DictConfig
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_lit.errors import UserError, first_line
from mnist_lit.export.predictors import Predictor, describe, load_predictor, top_classes
from mnist_lit.serving import ONNX_SUFFIX, served_file

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: how ``serve`` tells each uvicorn worker process what to load (they import this module anew)
SETTINGS_ENV = "MNIST_LIT_SERVE_SETTINGS"
TOP_K = 3


@dataclass(frozen=True)
class Limits:
    """What one request may send (``conf/serve.yaml``'s ``limits``)."""

    max_body_bytes: int = 4 * 2**20
    max_pixels: int = 4_000_000
    max_batch: int = 64


class BadRequest(Exception):
    """A request the server refuses: its status code and the one-line reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(" ".join(reason.split()))
        self.status = status


# ----------------------------------------------------------------------------- the body limit


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` is 413, refused on its ``Content-Length``
    before any of it is read, or as soon as a body sent without one (chunked) passes it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse(
                {"error": self._too_large()}, status_code=413, headers={"Connection": "close"}
            )
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise BadRequest(self._too_large(), 413)
            return message

        await self.app(scope, limited, send)

    def _too_large(self) -> str:
        return f"the request body is over {self.max_bytes:,} bytes: send a smaller image"


# ----------------------------------------------------------------------------- reading images


def _check_pixels(data: bytes, max_pixels: int) -> None:
    """Refuse an image with over ``max_pixels`` from its header, before decoding it."""
    size: tuple[int, int] | None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            size = Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError:  # so many pixels that PIL refuses to say how many
        size = None
    except Exception:  # not an image PIL knows: prepare() says what is wrong with it
        return
    if size is None or size[0] * size[1] > max_pixels:
        shown = f"{size[0]}x{size[1]}" if size else "far too large"
        raise BadRequest(
            f"the image is {shown}, over the limit of {max_pixels:,} pixels (a decompression "
            "bomb?): send a smaller image"
        )


def _prepared(predictor: Predictor, data: bytes, limits: Limits) -> np.ndarray:
    """The ``[1, 28, 28]`` input for one image file's bytes, or a ``BadRequest``."""
    _check_pixels(data, limits.max_pixels)
    try:
        return predictor.prepare(data)
    except UserError as err:
        raise BadRequest(str(err)) from None
    except Exception as err:  # an image no one foresaw: refuse it, keep serving
        raise BadRequest(
            f"cannot read the image ({type(err).__name__}: {first_line(err)})"
        ) from None


async def _images(request: Request, limits: Limits) -> tuple[list[bytes], bool]:
    """The image files a request sends, and whether it asked for a batch answer."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    # (curl --data-binary labels any body x-www-form-urlencoded: such a body is the image itself)
    if kind == "multipart/form-data":
        try:
            form = await request.form(max_files=limits.max_batch, max_fields=limits.max_batch)
        except HTTPException as err:  # python-multipart's refusal, made one line by Starlette
            raise BadRequest(f"malformed form data: {err.detail}") from None
        except Exception as err:
            raise BadRequest(f"malformed form data: {first_line(err)}") from None
        files = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if not files:
            raise BadRequest("the form has no file: send the image as a file field")
        return [await f.read() for f in files], len(files) > 1
    body = await request.body()
    if kind == "application/json":
        return _json_images(body)
    if not body:
        raise BadRequest("the request has no body: send a PNG or JPEG image")
    return [body], False


def _json_images(body: bytes) -> tuple[list[bytes], bool]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"malformed JSON: {first_line(err)}") from None
    if isinstance(payload, dict) and isinstance(payload.get("image"), str):
        encoded, batch = [payload["image"]], False
    elif isinstance(payload, dict) and isinstance(payload.get("images"), list):
        encoded, batch = payload["images"], True
    else:
        raise BadRequest(
            'JSON must be {"image": "<base64 PNG/JPEG>"} or {"images": ["<base64>", ...]}'
        )
    images = []
    for i, item in enumerate(encoded):
        if not isinstance(item, str):
            raise BadRequest(f"images[{i}] is not a base64 string")
        if item.startswith("data:"):  # a data URL, as a canvas's toDataURL() gives
            item = item.partition(",")[2]
        try:
            images.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(f"images[{i}] is not valid base64") from None
    return images, batch


# ----------------------------------------------------------------------------- answers


def result(predictor: Predictor, probabilities: np.ndarray, pixels: np.ndarray) -> dict[str, Any]:
    """One image's answer: the top class, every probability, the top 3 and the input."""
    top = top_classes(probabilities, TOP_K)
    label, probability = top[0]
    return {
        "label": label,
        "class": predictor.classes[label],
        "probability": round(probability, 6),
        "probabilities": [round(float(p), 6) for p in probabilities],
        "top": [
            {"label": k, "class": predictor.classes[k], "probability": round(p, 6)} for k, p in top
        ],
        "input": np.rint(pixels[0] * 255).astype(np.uint8).tolist(),
    }


def create_app(predictor: Predictor, limits: Limits | None = None) -> FastAPI:
    """The app serving ``predictor`` (an in-process ``TestClient`` can drive it too)."""
    limits = limits or Limits()
    app = FastAPI(
        title="mnist-lit",
        description="Classify a handwritten digit (or a Fashion-MNIST product) image.",
        # FastAPI's pages of the API load their scripts from a CDN: none, so nothing needs one
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, err: BadRequest) -> Response:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> Response:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """The model served, its classes and the request limits."""
        return {"status": "ok", **describe(predictor), "limits": asdict(limits)}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        """Classify one image (a result) or several (``{"predictions": [...]}``)."""
        images, batch = await _images(request, limits)
        if len(images) > limits.max_batch:
            raise BadRequest(
                f"{len(images)} images in one request, over the limit of {limits.max_batch}: "
                "send fewer"
            )
        if not batch:
            pixels = _prepared(predictor, images[0], limits)
            return result(predictor, predictor.probabilities(pixels[None])[0], pixels)
        prepared: list[np.ndarray | str] = []
        for data in images:
            try:
                prepared.append(_prepared(predictor, data, limits))
            except BadRequest as err:
                prepared.append(str(err))
        good = [p for p in prepared if isinstance(p, np.ndarray)]
        probabilities = iter(predictor.probabilities(np.stack(good)) if good else [])
        return {
            "predictions": [
                result(predictor, next(probabilities), p)
                if isinstance(p, np.ndarray)
                else {"error": p}
                for p in prepared
            ]
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# ----------------------------------------------------------------------------- the command


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker, built from what ``serve`` put in ``SETTINGS_ENV``."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    return create_app(loaded(Path(settings["model"])), Limits(**settings["limits"]))


def loaded(model: Path) -> Predictor:
    """The predictor of one server process, on one thread.

    A request is one image: more threads make it no faster, and idle ones spin (onnxruntime)
    or oversubscribe the cores (torch), taking them from the event loop and the other workers.
    """
    return load_predictor(model, threads=1)


def serve(cfg: DictConfig) -> None:
    """Serve ``cfg.ckpt_path`` on ``cfg.host``:``cfg.port`` until Ctrl-C or SIGTERM."""
    import uvicorn

    model = served_file(cfg)
    limits = Limits(**cfg.limits)
    predictor = loaded(model)  # a bad file: one line, before listening
    print(
        f"[mnist-lit] serving {model} ({predictor.dataset}, {len(predictor.classes)} classes, "
        f"{'onnxruntime' if model.suffix == ONNX_SUFFIX else 'torch'}) at "
        f"http://{cfg.host}:{cfg.port}/ with {cfg.workers} worker(s); Ctrl-C stops",
        flush=True,
    )
    _check_port_free(cfg.host, cfg.port)
    if cfg.workers == 1:
        app: FastAPI | str = create_app(predictor, limits)
    else:  # each worker process builds its own app: uvicorn imports it by name
        os.environ[SETTINGS_ENV] = json.dumps({"model": str(model), "limits": asdict(limits)})
        app = "mnist_lit.serving.server:app_from_environment"
    uvicorn.run(
        app,
        factory=cfg.workers > 1,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        access_log=cfg.access_log,
        log_level="info",
    )


def _check_port_free(host: str, port: int) -> None:
    """One line for a port in use or a host this machine does not have, before uvicorn tries."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise UserError(
                f"cannot listen on {host}:{port} ({err.strerror or err}): pass another "
                "port=<number> or host=<address>"
            ) from None
