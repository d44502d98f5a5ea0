"""The served side of ``serve_bench.py``: the real ``python serve.py`` on a free port, and the
closed-loop client (aiohttp, one asyncio process) that sends it single-image requests and times
each answer.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(model: Path, runtime: str, workers: int, port: int, out: Path) -> subprocess.Popen:
    """The real ``python serve.py``, answering ``/health`` (or ``SystemExit`` with its log)."""
    import urllib.request

    log = open(out / "serve.log", "w")  # noqa: SIM115  (the server's, while it runs)
    server = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "serve.py"),
            f"ckpt_path={model}",
            f"runtime={runtime}",
            f"port={port}",
            f"workers={workers}",
            f"hydra.run.dir={out / 'serve'}",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"serve.py exited with {server.returncode} before answering")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("serve.py did not answer /health within 120 s")


async def load(
    url: str, files: list[bytes], expected: list[int], concurrency: int, requests: int
) -> dict[str, Any]:
    """``requests`` single-image POSTs from ``concurrency`` clients, each sending its next
    request when the last one is answered (a closed loop). Latency: send to last byte."""
    import aiohttp

    latencies: list[float] = []
    errors: list[str] = []
    mismatches = 0
    issued = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal issued, mismatches
            while issued < requests:
                i = issued % len(files)
                issued += 1
                start = time.perf_counter()
                try:
                    async with session.post(
                        url, data=files[i], headers={"Content-Type": "image/png"}
                    ) as response:
                        body = await response.read()
                        status = response.status
                except aiohttp.ClientError as err:
                    errors.append(f"{type(err).__name__}: {err}")
                    continue
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors.append(f"HTTP {status}: {body[:200]!r}")
                elif json.loads(body)["label"] != expected[i]:
                    mismatches += 1

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    ms = sorted(x * 1e3 for x in latencies)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "seconds": seconds,
        "requests_per_s": requests / seconds,
        "p50_ms": statistics.median(ms),
        "p99_ms": statistics.quantiles(ms, n=100)[98],
        "mean_ms": statistics.fmean(ms),
        "errors": len(errors),
        "first_errors": errors[:5],
        "label_mismatches": mismatches,
    }
