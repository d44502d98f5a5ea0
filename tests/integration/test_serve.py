"""The real ``python serve.py``: the same answers as ``predict.py`` for the same files, every bad
input sent while other clients keep it busy (it answers each and keeps serving), a checkpoint
or a run dir served as well as an ONNX file, the command's one-line refusals, and its workers
ending when it is killed. (The API in detail, in-process: tests/unit/test_serve.py; the page in a
browser: test_page.py.)
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest
from PIL import Image
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lit.config import PROJECT_ROOT

from ..conftest import error_line, onnx_file, run_cli
from .served import free_port, mnist_onnx, page_png, running_server, served_url

__all__ = ["mnist_onnx", "served_url"]  # fixtures, used by name

N_DIGITS = 40


@pytest.fixture(scope="module")
def digits(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    """The first N_DIGITS MNIST test digits as the page sends them, in a folder, and labels."""
    raw = mnist_data_dir / "MNIST" / "raw"
    images = read_image_file(str(raw / "t10k-images-idx3-ubyte"))[:N_DIGITS].numpy()
    labels = read_label_file(str(raw / "t10k-labels-idx1-ubyte"))[:N_DIGITS].tolist()
    folder = tmp_path_factory.mktemp("page-digits")
    for i, digit in enumerate(images):
        (folder / f"digit_{i:02d}.png").write_bytes(page_png(digit))
    return folder, labels


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """POST ``body`` to ``url``/predict: the status and the JSON answer."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(
            "POST", "/predict", body, {"Content-Type": "image/png", **(headers or {})}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_the_server_answers_as_predict_py_does_for_the_same_files(
    served_url: str, mnist_onnx: Path, digits, tmp_path: Path
) -> None:
    folder, labels = digits
    output = tmp_path / "predicted.json"
    done = run_cli(
        "predict.py", f"ckpt_path={mnist_onnx}", f"images={folder}", f"output={output}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    offline = {Path(row["file"]).name: row for row in json.loads(output.read_text())}
    right = 0
    for i, path in enumerate(sorted(folder.glob("*.png"))):
        status, answer = post(served_url, path.read_bytes())
        assert status == 200, answer
        row = offline[path.name]
        assert answer["label"] == row["label"]
        assert [t["label"] for t in answer["top"]] == [t["label"] for t in row["top"]]
        assert answer["probability"] == pytest.approx(row["probability"], abs=1e-5)
        right += answer["label"] == labels[i]
    assert right >= 0.9 * N_DIGITS  # the small CNN reads MNIST's own digits


def raw_request(url: str, data: bytes, read_answer: bool = True) -> bytes:
    """Send ``data`` as it is on a new connection (requests no HTTP client would make)."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(data)
        if not read_answer:
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def bad_inputs(digit: bytes) -> dict[str, tuple[bytes, dict[str, str], int, str]]:
    """name: (body, headers, status, start of the error line)."""
    big = Image.new("L", (5_000, 5_000), 0)  # 25 M pixels in a ~25 kB PNG
    bomb = io.BytesIO()
    big.save(bomb, "PNG")
    blank = io.BytesIO()
    Image.new("L", (280, 280), 0).save(blank, "PNG")
    return {
        "not an image": (b"%PDF-1.4 not an image", {}, 400, "not an image"),
        "truncated": (digit[: len(digit) // 2], {}, 400, "the image is truncated"),
        "decompression bomb": (bomb.getvalue(), {}, 400, "the image is 5000x5000"),
        "blank canvas": (blank.getvalue(), {}, 400, "no digit found"),
        "malformed JSON": (b'{"image": "', {"Content-Type": "application/json"}, 400, "malformed"),
        "JSON not base64": (
            json.dumps({"image": "not base64!"}).encode(),
            {"Content-Type": "application/json"},
            400,
            "image is not valid base64",  # the key sent,
        ),
        "malformed form": (
            b"--x\r\nbroken",
            {"Content-Type": "multipart/form-data"},  # no boundary: its parts cannot be found
            400,
            "malformed form data",
        ),
        "batch over the limit": (
            json.dumps({"images": [base64.b64encode(digit).decode()] * 65}).encode(),
            {"Content-Type": "application/json"},
            400,
            "65 images in one request",
        ),
    }


def test_every_bad_input_while_under_load_is_answered_and_the_server_goes_on(
    served_url: str, digits
) -> None:
    folder, _ = digits
    good = [p.read_bytes() for p in sorted(folder.glob("*.png"))]
    stop = threading.Event()
    answered: list[int] = []
    failures: list[str] = []

    def busy_client() -> None:  # bounded: stops when told, after 90 s or 2,000 requests
        deadline = time.monotonic() + 90
        for i in range(2_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                status, answer = post(served_url, good[i % len(good)])
            except OSError as err:
                failures.append(f"{type(err).__name__}: {err}")
                continue
            answered.append(status)
            if status != 200:
                failures.append(f"{status}: {answer}")

    clients = [threading.Thread(target=busy_client) for _ in range(8)]
    for client in clients:
        client.start()
    try:
        while len(answered) < 20:  # the load is on
            time.sleep(0.05)
        for name, (body, headers, status, start) in bad_inputs(good[0]).items():
            got, answer = post(served_url, body, headers)
            assert got == status, (name, answer)
            assert answer["error"].startswith(start), (name, answer)
        # over the size limit: refused on its Content-Length, before the body is sent (a
        # client still sending when the server closes gets a reset, not the answer)
        head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4194305\r\n\r\n"
        too_large = raw_request(served_url, head)
        assert too_large.startswith(b"HTTP/1.1 413") and b"the request body is over" in too_large
        # requests no client library would send: a body cut off, and not HTTP at all
        cut = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + good[0][:99]
        raw_request(served_url, cut, read_answer=False)
        assert raw_request(served_url, b"\x16\x03\x01 hello, TLS?\r\n\r\n").startswith(
            b"HTTP/1.1 400"
        )
        before = len(answered)
        time.sleep(1.0)
        assert len(answered) > before  # still answering the others
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=120)
    assert failures == []
    status, answer = post(served_url, good[0])
    assert status == 200 and len(answer["probabilities"]) == 10


@pytest.mark.slow
def test_a_run_dir_is_served_by_torch_with_the_onnx_files_answers(
    served_url: str, mnist_ckpt: Path, digits, tmp_path: Path
) -> None:
    folder, _ = digits
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(mnist_ckpt, run / "checkpoints" / "last.ckpt")  # a run killed before its test
    with running_server(
        f"ckpt_path={run}", "workers=1", f"hydra.run.dir={tmp_path / 'serve'}",
        log=tmp_path / "serve.log",
    ) as url:  # fmt: skip
        health = json.loads(http_get(url, "/health"))
        assert health["source"] == str(run / "checkpoints" / "last.ckpt")
        for path in sorted(folder.glob("*.png"))[:10]:
            _, from_ckpt = post(url, path.read_bytes())
            _, from_onnx = post(served_url, path.read_bytes())
            assert from_ckpt["label"] == from_onnx["label"]
            assert from_ckpt["probabilities"] == pytest.approx(from_onnx["probabilities"], abs=1e-4)


@pytest.mark.slow
def test_runtime_onnx_with_export_missing_exports_a_run_once_then_serves_it(
    served_url: str, mnist_ckpt: Path, digits, tmp_path: Path
) -> None:
    """What ``make serve`` runs (``runtime=onnx export_missing=true``) on a run dir without an
    ``.onnx`` file: ``export.py`` writes it beside the checkpoint, and the answers are those of
    the session's own export of the same checkpoint."""
    folder, _ = digits
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(mnist_ckpt, run / "checkpoints" / "last.ckpt")
    overrides = [f"ckpt_path={run}", "runtime=onnx", "export_missing=true", "workers=1"]
    log = tmp_path / "serve.log"
    with running_server(*overrides, f"paths.log_dir={tmp_path / 'logs'}", log=log) as url:
        health = json.loads(http_get(url, "/health"))
        assert health["source"] == str(run / "checkpoints" / "last.onnx")
        for path in sorted(folder.glob("*.png"))[:5]:
            _, exported_here = post(url, path.read_bytes())
            _, session_export = post(served_url, path.read_bytes())
            assert exported_here["probabilities"] == session_export["probabilities"]
    assert "exporting" in log.read_text()
    assert list((tmp_path / "logs" / "export" / "runs").iterdir())  # the export's own run dir
    with running_server(*overrides, f"paths.log_dir={tmp_path / 'logs'}", log=log):
        pass
    assert "exporting" not in log.read_text()  # once: the file is there now


def http_get(url: str, path: str) -> bytes:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().read()
    finally:
        connection.close()


def test_the_command_refuses_what_it_cannot_serve_in_one_line(
    mnist_ckpt: Path, tmp_path: Path
) -> None:
    log_dir = f"paths.log_dir={tmp_path / 'logs'}"
    missing = run_cli("serve.py", f"ckpt_path={tmp_path / 'nope.onnx'}", log_dir)
    assert missing.returncode == 2
    assert "nope.onnx does not exist" in error_line(missing.stderr)

    (tmp_path / "empty-run").mkdir()
    empty = run_cli("serve.py", f"ckpt_path={tmp_path / 'empty-run'}", log_dir)
    assert empty.returncode == 2
    assert "no checkpoints/last.ckpt" in error_line(empty.stderr)

    ckpt = tmp_path / "model.ckpt"
    shutil.copy(mnist_ckpt, ckpt)
    no_export = run_cli("serve.py", f"ckpt_path={ckpt}", "runtime=onnx", log_dir)
    assert no_export.returncode == 2
    assert "export.py ckpt_path=" in error_line(no_export.stderr)

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("serve.py", f"ckpt_path={ckpt}", f"port={port}", log_dir)
    assert busy.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in error_line(busy.stderr, alone=False)
    assert "http://" not in busy.stdout + busy.stderr  # no address the server never answers


@pytest.mark.slow
def test_the_serving_benchmark_writes_its_report(mnist_onnx: Path, tmp_path: Path) -> None:
    """``benchmarks/serve_bench.py --quick``: every table written (its figures mean nothing)."""
    done = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "benchmarks" / "serve_bench.py"), "--quick",
         f"--ckpt={mnist_onnx}", "--concurrency", "1", "4", f"--out={tmp_path}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = (tmp_path / "serve_bench.md").read_text()
    assert "| 1 | 40 |" in report and "| 4 | 40 |" in report
    assert "python predict.py" in report
    results = json.loads((tmp_path / "serve_bench.json").read_text())
    assert [run["errors"] for run in results["served"]] == [0, 0]
    assert [run["label_mismatches"] for run in results["served"]] == [0, 0]


def test_the_workers_end_when_serve_py_is_killed(tmp_path: Path) -> None:
    """SIGKILL stops serve.py without a word to its workers: they must end by themselves, not
    go on holding the port and a model each. (A tiny ONNX file: no model to train.)"""
    log, model = tmp_path / "serve.log", onnx_file(tmp_path / "tiny.onnx")
    command = [
        sys.executable, str(PROJECT_ROOT / "serve.py"), f"ckpt_path={model}", "workers=2",
        f"port={free_port()}", f"hydra.run.dir={tmp_path / 'run'}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    with open(log, "w") as out:
        # its own process group: whatever this test leaves behind is ended by it below
        server = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    started: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while log.read_text().count("Application startup complete") < 2:  # both workers serve
            assert server.poll() is None, f"serve.py exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the workers did not start:\n{log.read_text()}"
            time.sleep(0.2)
        started = psutil.Process(server.pid).children(recursive=True)
        workers = [p for p in started if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2, [p.cmdline() for p in started]
        server.kill()
        server.wait()
        # everything serve.py started (the workers, multiprocessing's resource tracker) ends
        _, alive = psutil.wait_procs(started, timeout=30)
        assert alive == [], [p.cmdline() for p in alive]
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for process in started:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        with contextlib.suppress(ProcessLookupError):  # the group is empty: all ended
            os.killpg(server.pid, signal.SIGKILL)
