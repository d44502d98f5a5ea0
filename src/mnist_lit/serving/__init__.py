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

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

from omegaconf import DictConfig
from pydantic import Field

from mnist_lit.cli import best_checkpoint, override_key, run_dirs
from mnist_lit.config import PROJECT_ROOT, check
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
    if best := best_checkpoint(run_dir):
        return best
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
    """What ``serve.py`` refuses before the server loads: a config value, more workers than
    CPUs, a missing extra, a file it cannot serve. Returns the file to serve (``served_file``).
    (More workers than memory holds is refused once the model is loaded: ``check_worker_memory``.)
    """
    check(cfg, ServeOptions, required=("paths",))
    check_worker_cpus(cfg.workers, usable_cpus())
    require_extra("serve", "fastapi", "uvicorn", "psutil")
    return served_file(cfg)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (``taskset``, a container's cpuset), which
    may be fewer than the machine has; the machine's count where there is no affinity (macOS)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_worker_cpus(workers: int, cpus: int) -> None:
    """Refuse more workers than CPUs: a worker is a process with its own copy of the model, and
    one per CPU already keeps them all busy, so more only take memory (1,000 took all of it)."""
    if workers > cpus:
        raise UserError(
            f"workers={workers} is more than the {cpus} CPU(s) this process may use: pass "
            f"workers={cpus} or fewer"
        )


def check_worker_memory(workers: int, per_worker: int, available: int) -> None:
    """Refuse more workers than ``available`` bytes of memory hold at ``per_worker`` bytes each
    (the serving process's own size with its model loaded, which each worker repeats). One
    worker is the serving process itself, already loaded: never refused."""
    fits = available // max(per_worker, 1)
    if workers > 1 and workers > fits:
        raise UserError(
            f"workers={workers} would take about {workers * per_worker / 2**30:.1f} GiB "
            f"({per_worker / 2**20:,.0f} MiB each, a copy of the model and the server), over "
            f"the {available / 2**30:.1f} GiB of memory available: pass workers={max(fits, 1)} "
            "or fewer, or free some memory"
        )


def served_file(cfg: DictConfig) -> Path:
    """The file the server loads: ``ckpt_path``, or with ``runtime=onnx`` the ``.onnx`` export
    beside a checkpoint (exported first with ``export_missing=true``). A ``UserError`` when it
    is missing or not a model of this project (``export.checked_model``: a checkpoint is read to
    tell)."""
    path = Path(str(cfg.ckpt_path))
    if path.suffix.lower() != ONNX_SUFFIX and cfg.runtime == "onnx":
        exported = path.with_suffix(ONNX_SUFFIX)
        if not exported.is_file() and cfg.export_missing and path.is_file():
            export_beside(path, cfg.paths.log_dir)
        if not exported.is_file():
            raise UserError(
                f"runtime=onnx serves {exported}, which does not exist: make it with "
                f"`python export.py ckpt_path={path} format=onnx` (or pass export_missing=true), "
                "or pass runtime=checkpoint"
            )
        path = exported
    return checked_model(path)


def export_beside(checkpoint: Path, log_dir: str) -> None:
    """``python export.py ckpt_path=<checkpoint> verify=false``: its ``.onnx`` file beside it,
    as ``make serve`` asks the first time (a few seconds; its output and errors are shown). Its
    run dir goes under the serving run's ``log_dir``."""
    print(f"[mnist-lit] exporting {checkpoint} to ONNX for runtime=onnx (python export.py)")
    command = [sys.executable, str(PROJECT_ROOT / "export.py"), f"ckpt_path={checkpoint}"]
    done = subprocess.run([*command, "verify=false", f"paths.log_dir={log_dir}"], check=False)
    if done.returncode != 0:
        raise UserError(
            f"exporting {checkpoint} failed (its error is above): pass runtime=checkpoint to "
            "serve it with torch",
            done.returncode,
        )


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
    export_missing: bool
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    workers: Count
    limits: ServeLimits
    access_log: bool
