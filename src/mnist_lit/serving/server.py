"""The served model: a FastAPI app run by uvicorn, and the page at ``/``.

- ``POST /predict``: one image file (PNG, JPEG, WebP, GIF or BMP) as the raw body (any
  ``Content-Type``), or one or more as multipart form files, or as JSON
  ``{"image": "<base64>"}`` / ``{"images": ["<base64>", ...]}``. One image answers one result;
  several (or ``images``) answer ``{"predictions": [...]}``, each a result or ``{"error": ...}``.
  A result: ``label``, ``class``, ``probability``, every class's ``probabilities``, the ``top``
  3 and ``input``, the 28x28 image the model received (0-255 rows, as the page shows it).
- ``GET /health``: the model served, its classes and the limits.
- ``GET /``: ``static/index.html``, a canvas to draw on (no file from another site).

Every image goes through ``Predictor.prepare``, the very preprocessing of ``predict.py``. Bad
input is answered, never raised (``inputs.py``): a body over ``max_body_bytes``, or images over
``max_request_pixels`` in all, is 413 before they are read or decoded; not an image, too many
pixels, no digit, malformed JSON or form data is 400 with ``{"error": "<one line>"}``. The event
loop reads requests and answers; preparing and classifying a request's images runs on a thread
(``WORK_THREADS`` at a time), so a large batch does not hold up ``/health`` or the requests
behind it.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from omegaconf import DictConfig
from starlette.exceptions import HTTPException

from mnist_lit.errors import UserError
from mnist_lit.export import ONNX_SUFFIX
from mnist_lit.export.predictors import Predictor, describe, load_predictor, top_classes
from mnist_lit.serving import check_worker_memory
from mnist_lit.serving.inputs import (
    BadRequest,
    BodyLimit,
    Limits,
    check_request_pixels,
    prepared_image,
    request_images,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
#: how ``serve`` tells each uvicorn worker process what to load (they import this module anew)
SETTINGS_ENV = "MNIST_LIT_SERVE_SETTINGS"
TOP_K = 3
#: requests a worker prepares and classifies at once, each on a thread: two, so one large
#: request leaves a thread to the small ones; more would share the worker's one core all the
#: same and multiply the images in memory at once
WORK_THREADS = 2
#: prctl's option that has the kernel signal a process when its parent exits (linux/prctl.h)
PR_SET_PDEATHSIG = 1
#: how long uvicorn's supervisor waits for a worker's answer before it replaces the worker
WORKER_PING_SECONDS = 60


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


def answer(
    predictor: Predictor, images: list[bytes], batch: bool, limits: Limits
) -> dict[str, Any]:
    """Prepare and classify a request's images (on a worker thread): one result, or for a
    batch ``{"predictions": [...]}`` with ``{"error": ...}`` in place of an image refused."""
    check_request_pixels(images, limits)
    if not batch:
        pixels = prepared_image(predictor, images[0], limits)
        return result(predictor, predictor.probabilities(pixels[None])[0], pixels)
    prepared: list[np.ndarray | str] = []
    for data in images:
        try:
            prepared.append(prepared_image(predictor, data, limits))
        except BadRequest as err:
            prepared.append(str(err))
    good = [p for p in prepared if isinstance(p, np.ndarray)]
    probabilities = iter(predictor.probabilities(np.stack(good)) if good else [])
    return {
        "predictions": [
            result(predictor, next(probabilities), p) if isinstance(p, np.ndarray) else {"error": p}
            for p in prepared
        ]
    }


def create_app(predictor: Predictor, limits: Limits | None = None) -> FastAPI:
    """The app serving ``predictor`` (an in-process ``TestClient`` can drive it too)."""
    limits = limits or Limits()
    work: dict[str, anyio.CapacityLimiter] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # made in the event loop that uses it: a limiter belongs to one (older anyio cannot
        # make one outside a loop at all)
        work["threads"] = anyio.CapacityLimiter(WORK_THREADS)
        yield

    app = FastAPI(
        title="mnist-lit",
        description="Classify a handwritten digit (or a Fashion-MNIST product) image.",
        # FastAPI's pages of the API load their scripts from a CDN: none, so nothing needs one
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
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
        images, batch = await request_images(request, limits)
        if len(images) > limits.max_batch:
            raise BadRequest(
                f"{len(images)} images in one request, over the limit of {limits.max_batch}: "
                "send fewer"
            )
        # off the event loop: decoding a large image takes a good part of a second
        return await anyio.to_thread.run_sync(
            answer, predictor, images, batch, limits, limiter=work["threads"]
        )

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


# ----------------------------------------------------------------------------- the command


def app_from_environment() -> FastAPI:
    """The app of one uvicorn worker, built from what ``serve`` put in ``SETTINGS_ENV``."""
    settings = json.loads(os.environ[SETTINGS_ENV])
    end_with_parent(settings["parent"])  # first: loading the model takes a while
    return create_app(loaded(Path(settings["model"])), Limits(**settings["limits"]))


def end_with_parent(parent: int) -> None:
    """End this worker process when ``parent`` (``serve.py``) ends, however it ends.

    uvicorn's supervisor stops its workers on Ctrl-C or SIGTERM, but a SIGKILL or a crash of
    ``serve.py`` tells them nothing: they would serve on, orphaned, each with its model. On Linux
    the kernel sends this process SIGKILL when its parent exits (``prctl(PR_SET_PDEATHSIG)``,
    as no thread of ours needs to be scheduled for it); elsewhere a thread checks the parent
    once a second. SIGKILL, not SIGTERM: with no supervisor left, nothing should wait on an
    orderly shutdown (which a client sending slowly can hold open indefinitely).
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)  # the C library this process runs on
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0:
            if os.getppid() != parent:  # it ended before the signal was asked for
                os.kill(os.getpid(), signal.SIGKILL)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()


def loaded(model: Path) -> Predictor:
    """The predictor of one server process, on one thread.

    A request is one image: more threads make it no faster, and idle ones spin (onnxruntime)
    or oversubscribe the cores (torch), taking them from the event loop and the other workers.
    """
    return load_predictor(model, threads=1)


def serve(cfg: DictConfig, model: Path) -> None:
    """Serve ``model`` (``served_file(cfg)``) on ``cfg.host``:``cfg.port`` until Ctrl-C or
    SIGTERM."""
    import psutil
    import uvicorn

    limits = Limits(**cfg.limits)
    predictor = loaded(model)  # a bad file: one line, before listening
    # this process holds what a worker will (the modules, the model): its size is a worker's
    check_worker_memory(
        cfg.workers, psutil.Process().memory_info().rss, psutil.virtual_memory().available
    )
    # the address is printed once the port is known to be free: a port in use is one line
    check_port_free(cfg.host, cfg.port)
    print(
        f"[mnist-lit] serving {model} ({predictor.dataset}, {len(predictor.classes)} classes, "
        f"{'onnxruntime' if model.suffix.lower() == ONNX_SUFFIX else 'torch'}) at "
        f"http://{cfg.host}:{cfg.port}/ with {cfg.workers} worker(s); Ctrl-C stops",
        flush=True,
    )
    if cfg.workers == 1:
        app: FastAPI | str = create_app(predictor, limits)
    else:  # each worker process builds its own app: uvicorn imports it by name
        settings = {"model": str(model), "limits": asdict(limits), "parent": os.getpid()}
        os.environ[SETTINGS_ENV] = json.dumps(settings)
        app = "mnist_lit.serving.server:app_from_environment"
    uvicorn.run(
        app,
        factory=cfg.workers > 1,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        # uvicorn kills a worker that does not answer its supervisor's ping in time (5 s by
        # default) and starts another: a worker still importing torch and loading the model on
        # busy cores can take longer, and each replacement adds to the load
        timeout_worker_healthcheck=WORKER_PING_SECONDS,
        access_log=cfg.access_log,
        log_level="info",
    )


def check_port_free(host: str, port: int) -> None:
    """One line for a port in use or a host this machine does not have, before the address is
    printed and uvicorn binds it (the probe binds the port and lets it go at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            other = port + 1 if port < 65535 else 8000
            raise UserError(
                f"cannot listen on {host}:{port} ({err.strerror or err}): pass another "
                f"port=<number> (make serve port={other}) or host=<address>"
            ) from None
