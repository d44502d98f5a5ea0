"""What one request sends, read and refused in one line: the body limit (413 before an
oversized body is read), the image files of a raw body, a form or JSON, the pixels of all its
images together (413 over the limit of a request) and each image prepared for the model with its
pixel count checked before it is decoded (400 for anything else wrong).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import warnings
from dataclasses import dataclass

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mnist_lit.errors import UserError, first_line
from mnist_lit.export.predictors import Predictor


@dataclass(frozen=True)
class Limits:
    """What one request may send (``conf/serve.yaml``'s ``limits``)."""

    max_body_bytes: int = 4 * 2**20
    max_pixels: int = 4_000_000
    max_batch: int = 64
    max_request_pixels: int = 8_000_000


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


def image_size(data: bytes) -> tuple[int, int] | None:
    """An image file's ``(width, height)`` from its header, nothing decoded; ``None`` when it
    has so many pixels that PIL refuses to say how many. ``ValueError`` when it is no image
    PIL knows (``prepare`` then says what is wrong with it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError:
        return None
    except Exception as err:
        raise ValueError(first_line(err)) from None


def check_pixels(data: bytes, max_pixels: int) -> None:
    """Refuse an image with over ``max_pixels`` from its header, before decoding it."""
    try:
        size = image_size(data)
    except ValueError:  # not an image PIL knows: prepare() says what is wrong with it
        return
    if size is None or size[0] * size[1] > max_pixels:
        shown = f"{size[0]}x{size[1]}" if size else "far too large"
        raise BadRequest(
            f"the image is {shown}, over the limit of {max_pixels:,} pixels (a decompression "
            "bomb?): send a smaller image"
        )


def check_request_pixels(images: list[bytes], limits: Limits) -> None:
    """413 for a request whose images have over ``max_request_pixels`` in all, from their
    headers: preparing an image takes time in proportion to its pixels (about 40 ms a million
    on one core), so this bounds the time one request holds a worker. An image refused on its
    own (not an image, over ``max_pixels``) is never decoded and does not count."""
    total = 0
    for data in images:
        try:
            size = image_size(data)
        except ValueError:
            continue
        if size is not None and size[0] * size[1] <= limits.max_pixels:
            total += size[0] * size[1]
    if total > limits.max_request_pixels:
        raise BadRequest(
            f"the request's images have {total:,} pixels in all, over the limit of "
            f"{limits.max_request_pixels:,} per request: send fewer or smaller images",
            413,
        )


def prepared_image(predictor: Predictor, data: bytes, limits: Limits) -> np.ndarray:
    """The ``[1, 28, 28]`` input for one image file's bytes, or a ``BadRequest``."""
    check_pixels(data, limits.max_pixels)
    try:
        return predictor.prepare(data)
    except UserError as err:
        raise BadRequest(str(err)) from None
    except Exception as err:  # an image no one foresaw: refuse it, keep serving
        raise BadRequest(
            f"cannot read the image ({type(err).__name__}: {first_line(err)})"
        ) from None


async def request_images(request: Request, limits: Limits) -> tuple[list[bytes], bool]:
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
        return json_images(body)
    if not body:
        raise BadRequest("the request has no body: send a PNG, JPEG, WebP, GIF or BMP image")
    return [body], False


def json_images(body: bytes) -> tuple[list[bytes], bool]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise BadRequest(f"malformed JSON: {first_line(err)}") from None
    except RecursionError:  # json's parser recurses per level: [[[[... a few kB deep stops it
        raise BadRequest("malformed JSON: nested too deeply") from None
    # each string is named in an error as it was sent: `image`, or `images[i]` of a batch
    if isinstance(payload, dict) and isinstance(payload.get("image"), str):
        named, batch = [("image", payload["image"])], False
    elif isinstance(payload, dict) and isinstance(payload.get("images"), list):
        named, batch = [(f"images[{i}]", item) for i, item in enumerate(payload["images"])], True
    else:
        raise BadRequest(
            'JSON must be {"image": "<base64 image file>"} or {"images": ["<base64>", ...]}'
        )
    images = []
    for key, item in named:
        if not isinstance(item, str):
            raise BadRequest(f"{key} is not a base64 string")
        if item.startswith("data:"):  # a data URL, as a canvas's toDataURL() gives
            item = item.partition(",")[2]
        try:
            images.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise BadRequest(f"{key} is not valid base64") from None
    return images, batch
