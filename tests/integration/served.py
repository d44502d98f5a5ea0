"""A real ``python serve.py`` for the serving tests (test_serve.py, test_page.py): the small
MNIST CNN of ``mnist_ckpt``, exported to ONNX, served on a free port of 127.0.0.1."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_lit.config import PROJECT_ROOT

from ..conftest import run_cli


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running_server(*overrides: str, log: Path, timeout: float = 120) -> Iterator[str]:
    """``python serve.py <overrides>`` on a free port until the block ends: its base URL.

    Its output goes to ``log``; the server must still be running when the block ends (a crash
    under bad input fails the test), and is then stopped with SIGTERM.
    """
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    command = [sys.executable, str(PROJECT_ROOT / "serve.py"), f"port={port}", *overrides]
    with open(log, "w") as out:
        server = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if server.poll() is not None:
                pytest.fail(f"serve.py exited with {server.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"serve.py did not answer in {timeout} s:\n{log.read_text()}")
                time.sleep(0.2)
        yield url
        assert server.poll() is None, f"the server died:\n{log.read_text()}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture(scope="session")
def mnist_onnx(mnist_ckpt: Path) -> Path:
    """``mnist_ckpt`` exported by ``python export.py`` (once)."""
    onnx = mnist_ckpt.with_name("small-served.onnx")
    run_dir = mnist_ckpt.parent / "export-run"
    done = run_cli(
        "export.py", f"ckpt_path={mnist_ckpt}", f"output={onnx}", "verify=false",
        f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return onnx


@pytest.fixture(scope="session")
def served_url(mnist_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The ONNX model served by 2 workers for the whole session."""
    folder = tmp_path_factory.mktemp("served")
    with running_server(
        f"ckpt_path={mnist_onnx}", "workers=2", f"hydra.run.dir={folder / 'run'}",
        log=folder / "serve.log",
    ) as url:  # fmt: skip
        yield url


def page_png(digit: np.ndarray, size: int = 280) -> bytes:
    """An MNIST digit as the page's canvas sends it: white ink on black, ``size`` px, PNG."""
    buffer = io.BytesIO()
    Image.fromarray(digit).resize((size, size), Image.BILINEAR).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def browser() -> Iterator:
    """Debian's headless chromium driven by Playwright (the page tests); skipped, saying what to
    install, without either."""
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium on PATH: apt-get install chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()
