"""``make bench-serve``: the served model under load, beside ``predict.py`` on the same images.

1. writes ``--images`` MNIST test digits as the page sends them (280x280 PNG, light on dark);
2. offline: ``python predict.py`` on that folder (wall time, start-up included), and the same
   ``Predictor`` the command and the server use, in-process (prepare + batches of 256);
3. starts the real ``python serve.py`` (``--workers``, ``--runtime``) and sends single-image
   ``POST /predict`` requests at each ``--concurrency`` (``--requests`` each, after a warm-up),
   from one asyncio client (aiohttp) in this process (``serve_load.py``): requests/s, p50/p99
   latency, errors, and whether each answer's label matches the offline one for the same image.

``python benchmarks/serve_bench.py --ckpt <checkpoint | run dir | last | file.onnx>`` writes
``serve_bench.md`` and ``serve_bench.json`` under ``--out`` (default ``logs/bench/serve-<time>/``),
with the images and the server's log. ``--runtime onnx`` exports the checkpoint first when its
``.onnx`` file is missing (``python export.py``, beside it).
The client shares the machine's cores with the server: on the 2-core CPU the figures are those
of the whole machine, client included. ``--quick``: a few requests, for the test suite; its
figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # runs from a clone before `pip install -e .` too

from serve_load import free_port, load, start_server  # noqa: E402

from mnist_lit.export.predictors import load_predictor  # noqa: E402
from mnist_lit.serving import model_command_line  # noqa: E402

#: the targets of issue 13, on the 2-core CPU
TARGET_P50_MS_AT_1 = 5.0
TARGET_RPS_AT_32 = 500.0

_STARTED = time.perf_counter()


def say(message: str) -> None:
    print(f"[serve-bench {time.perf_counter() - _STARTED:5.0f} s] {message}", flush=True)


# ----------------------------------------------------------------------------- the images


def page_like_png(digit: np.ndarray) -> bytes:
    """An MNIST digit as the page's canvas sends it: 280x280, white ink on black, PNG."""
    big = Image.fromarray(digit).resize((280, 280), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    big.save(buffer, "PNG")
    return buffer.getvalue()


def write_images(count: int, folder: Path) -> tuple[list[Path], list[int]]:
    """The first ``count`` MNIST test digits as PNG files, and their true labels."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = ROOT / "data" / "MNIST" / "raw"
    images = read_image_file(str(raw / "t10k-images-idx3-ubyte"))[:count].numpy()
    labels = read_label_file(str(raw / "t10k-labels-idx1-ubyte"))[:count].tolist()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, digit in enumerate(images):
        path = folder / f"digit_{i:05d}.png"
        path.write_bytes(page_like_png(digit))
        paths.append(path)
    return paths, labels


# ----------------------------------------------------------------------------- offline


def offline_in_process(model: Path, files: list[bytes]) -> tuple[float, list[int]]:
    """images/s of the ``Predictor`` alone (prepare each, batches of 256), and its labels."""
    predictor = load_predictor(model)
    predictor.probabilities(predictor.prepare(files[0])[None])  # warm-up
    labels: list[int] = []
    start = time.perf_counter()
    for first in range(0, len(files), 256):
        batch = np.stack([predictor.prepare(data) for data in files[first : first + 256]])
        labels += predictor.probabilities(batch).argmax(axis=1).tolist()
    return len(files) / (time.perf_counter() - start), labels


def offline_command(model: Path, folder: Path, count: int) -> float:
    """images/s of ``python predict.py ckpt_path=<model> images=<folder>``, start-up included."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "predict.py"), f"ckpt_path={model}", f"images={folder}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"predict.py failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return count / seconds


def export(checkpoint: Path, out: Path) -> None:
    """``python export.py ckpt_path=<checkpoint>``: the ``.onnx`` file beside it."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "export.py"), f"ckpt_path={checkpoint}", "verify=false",
         f"hydra.run.dir={out / 'export'}"],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"export.py failed ({done.returncode}):\n{done.stderr[-2000:]}")


# ----------------------------------------------------------------------------- the report


def render(results: dict[str, Any]) -> str:
    """The markdown of ``serve_bench.md``."""
    machine, setup = results["machine"], results["setup"]
    offline = results["offline"]
    lines = [
        "# Serving benchmark (`make bench-serve`)",
        "",
        f"{datetime.fromtimestamp(results['started']).isoformat(timespec='seconds')}, "
        f"{machine['cpu']} ({machine['cpus']} cores), Python {machine['python']}; "
        f"load average {machine['load_start']:.2f} at the start, {machine['load_end']:.2f} at "
        "the end.",
        "",
        f"Model: `{setup['model']}` ({setup['runtime']} runtime), served by `python serve.py` "
        f"with {setup['workers']} worker(s); {setup['images']} MNIST test digits as 280x280 PNG "
        "files (as the page sends them), sent one per request, round robin. The client (aiohttp, "
        "one process) runs on the same cores as the server.",
        "",
        "| concurrency | requests | requests/s | p50 ms | p99 ms | errors | labels differing "
        "from offline |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["served"]:
        lines.append(
            f"| {run['concurrency']} | {run['requests']:,} | {run['requests_per_s']:,.0f} | "
            f"{run['p50_ms']:.2f} | {run['p99_ms']:.2f} | {run['errors']} | "
            f"{run['label_mismatches']} |"
        )
    lines += [
        "",
        "| offline, the same images | images/s |",
        "|---|---:|",
        f"| `python predict.py ckpt_path=<model> images=<folder>` (wall, start-up included) | "
        f"{offline['command_images_per_s']:,.0f} |",
        f"| the same `Predictor` in-process (prepare + batches of 256, no start-up) | "
        f"{offline['in_process_images_per_s']:,.0f} |",
        "",
        "| target | figure | met |",
        "|---|---:|---|",
    ]
    for name, figure, target, met in results["checks"]:
        lines.append(f"| {name} (target {target}) | {figure} | {'yes' if met else 'NO'} |")
    if results["quick"]:
        lines += ["", "`--quick`: a few requests each; these figures mean nothing."]
    return "\n".join(lines) + "\n"


def checks(served: list[dict[str, Any]]) -> list[tuple[str, str, str, bool]]:
    by_concurrency = {run["concurrency"]: run for run in served}
    found = []
    if 1 in by_concurrency:
        p50 = by_concurrency[1]["p50_ms"]
        found.append(
            ("p50 at concurrency 1", f"{p50:.2f} ms", "<= 5 ms", p50 <= TARGET_P50_MS_AT_1)
        )
    if 32 in by_concurrency:
        rps = by_concurrency[32]["requests_per_s"]
        found.append(
            ("requests/s at concurrency 32", f"{rps:,.0f}", ">= 500", rps >= TARGET_RPS_AT_32)
        )
    errors = sum(run["errors"] for run in served)
    found.append(("errors, all runs", str(errors), "0", errors == 0))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint, run dir, last or .onnx file")
    parser.add_argument("--runtime", choices=["checkpoint", "onnx"], default="checkpoint")
    parser.add_argument("--workers", type=int, default=2, help="as conf/serve.yaml")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.images = 40, 20
    started = time.time()
    out = args.out or ROOT / "logs" / "bench" / f"serve-{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out.mkdir(parents=True, exist_ok=True)

    checkpoint = Path(
        model_command_line([f"ckpt_path={args.ckpt}"], ROOT / "logs" / "train")[0].split("=", 1)[1]
    )
    model = checkpoint.with_suffix(".onnx") if args.runtime == "onnx" else checkpoint
    runtime = "onnx" if model.suffix == ".onnx" else "checkpoint"  # a .onnx --ckpt is run so
    if checkpoint.suffix != ".onnx" and args.runtime == "onnx" and not model.is_file():
        say(f"exporting {checkpoint} to {model} (python export.py)")
        export(checkpoint, out)
    paths, _ = write_images(args.images, out / "images")
    files = [p.read_bytes() for p in paths]
    load_start = os.getloadavg()[0]

    say(f"offline: python predict.py on {len(paths)} files")
    command_rate = offline_command(model, out / "images", len(paths))
    in_process_rate, offline_labels = offline_in_process(model, files)
    say(f"offline: {command_rate:,.0f} images/s (command), {in_process_rate:,.0f} (in-process)")

    port = free_port()
    say(f"starting serve.py ({runtime}, {args.workers} worker(s)) on port {port}")
    server = start_server(checkpoint, args.runtime, args.workers, port, out)
    url = f"http://127.0.0.1:{port}/predict"
    served = []
    try:
        for concurrency in args.concurrency:
            asyncio.run(load(url, files, offline_labels, concurrency, min(200, args.requests)))
            run = asyncio.run(load(url, files, offline_labels, concurrency, args.requests))
            served.append(run)
            say(
                f"concurrency {concurrency}: {run['requests_per_s']:,.0f} requests/s, p50 "
                f"{run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, {run['errors']} errors"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)

    cpu = platform.processor() or "unknown CPU"
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
    ):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    results = {
        "started": started,
        "quick": args.quick,
        "machine": {
            "cpu": cpu,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_start": load_start,
            "load_end": os.getloadavg()[0],
        },
        "setup": {
            "model": str(model),
            "runtime": runtime,
            "workers": args.workers,
            "images": len(paths),
        },
        "offline": {
            "command_images_per_s": command_rate,
            "in_process_images_per_s": in_process_rate,
        },
        "served": served,
    }
    results["checks"] = checks(served)
    report = render(results)
    (out / "serve_bench.md").write_text(report)
    (out / "serve_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    print(report)
    say(f"wrote {out / 'serve_bench.md'} and {out / 'serve_bench.json'}")
    return 0 if all(met for *_, met in results["checks"]) or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
