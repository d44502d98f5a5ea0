"""The serve extra (``pip install -e '.[serve]'``): ``python serve.py ckpt_path=...``, a model
behind HTTP and a page to draw digits on. docs/serving.md.

``server.py`` is the FastAPI app (``POST /predict``, ``GET /health``, the page at ``/``) and
``serve``, the task that runs it under uvicorn; ``inputs.py`` reads and refuses what a request
sends; ``static/`` is the page (no external files). This module finds the file to serve and
checks ``conf/serve.yaml`` before the server loads: ``ckpt_path`` may name a checkpoint, a run
dir, ``last`` (both made the checkpoint file before Hydra starts) or an exported ``.onnx``
file. Nothing here imports torch or FastAPI.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from omegaconf import DictConfig
from pydantic import Field

from mnist_lit.cli import override_key, run_dirs
from mnist_lit.config import check
from mnist_lit.errors import UserError, require_extra
from mnist_lit.export import ONNX_SUFFIX, checked_model
from mnist_lit.schema import Count, Node, Options


def latest_servable_run(logs: Path) -> Path:
    """For ``ckpt_path=last``: the checkpoint of the newest run under ``logs`` (``logs/train``),
    single run or sweep job, that has one (a run stopped before its first is passed over)."""
    for run_dir in run_dirs(logs):
        try:
            return run_checkpoint(run_dir)
        except UserError:
            continue
    raise UserError(
        f"ckpt_path=last found no run with a checkpoint under {logs}: train one "
        "(python train.py) or pass ckpt_path=<checkpoint or run dir>"
    )


def run_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of a run dir to serve: the one its test used (best ``val/acc``), or
    ``last.ckpt`` for a run that has not finished."""
    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        try:
            best = json.loads(metrics.read_text()).get("best_ckpt")
        except (OSError, ValueError, AttributeError):
            best = None
        if best and Path(best).is_file():
            return Path(best)
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        return last
    raise UserError(
        f"ckpt_path={run_dir}: the run has no best checkpoint in metrics.json and no "
        "checkpoints/last.ckpt: pass ckpt_path=<run dir>/checkpoints/<file>.ckpt"
    )


def model_command_line(argv: Sequence[str], logs: Path) -> list[str]:
    """``argv`` with ``ckpt_path=<run dir>`` or ``ckpt_path=last`` made the checkpoint file to
    serve (``logs`` is ``logs/train``); other arguments, and a file path, pass unchanged."""
    out = []
    for arg in argv:
        if override_key(arg) == "ckpt_path" and "=" in arg:
            value = arg.split("=", 1)[1]
            if value == "last":
                value = str(latest_servable_run(logs))
            elif Path(value).is_dir():
                value = str(run_checkpoint(Path(value)))
            arg = f"{arg.split('=', 1)[0]}={value}"
        out.append(arg)
    return out


def check_serve(cfg: DictConfig) -> Path:
    """What ``serve.py`` refuses before the server loads: a config value, a missing extra, a
    file it cannot serve. Returns the file to serve (``served_file``)."""
    check(cfg, ServeOptions, required=("paths",))
    require_extra("serve", "fastapi", "uvicorn")
    return served_file(cfg)


def served_file(cfg: DictConfig) -> Path:
    """The file the server loads: ``ckpt_path``, or with ``runtime=onnx`` the ``.onnx`` export
    beside a checkpoint. A ``UserError`` when it is missing or not a model of this project
    (``export.checked_model``: a checkpoint is read to tell)."""
    path = Path(str(cfg.ckpt_path))
    if path.suffix.lower() != ONNX_SUFFIX and cfg.runtime == "onnx":
        exported = path.with_suffix(ONNX_SUFFIX)
        if not exported.is_file():
            raise UserError(
                f"runtime=onnx serves {exported}, which does not exist: make it with "
                f"`python export.py ckpt_path={path} format=onnx`, or pass runtime=checkpoint"
            )
        path = exported
    return checked_model(path)


class ServeLimits(Node):
    """``serve.limits``: what one request may send (``inputs.py``)."""

    max_body_bytes: Annotated[int, Field(ge=1024)]
    max_pixels: Annotated[int, Field(ge=28 * 28)]
    max_batch: Count
    max_request_pixels: Annotated[int, Field(ge=28 * 28)]


class ServeOptions(Options):
    """``conf/serve.yaml``'s own keys."""

    ckpt_path: str
    runtime: Literal["checkpoint", "onnx"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    workers: Count
    limits: ServeLimits
    access_log: bool
