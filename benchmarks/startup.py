"""Part 5 of ``make bench``: how long each command takes to answer, and what memory a run adds.

Every command is timed as a whole process (``python <script> ...`` from the repo root, wall
clock, median of the repeats), beside the floor measured in the same run: a bare
``python -c "import torch"``, ``import lightning`` and ``import torch, lightning``. The peak RSS
of a bare ``import torch, lightning`` is measured the same way, to set beside the 1-epoch
default run's (part 4): the difference is what the project adds.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from pipelines import WITH_STARTUP_TIME
from timing import run_for_peak_rss
from torchvision.datasets.mnist import read_image_file

from mnist_lit.config import PROJECT_ROOT
from mnist_lit.train import RESULTS_FILE

#: the commands that must answer without torch (issue 15: within 1 s), by their names below
ANSWERED_WITHOUT_TORCH = (
    "train.py --help",
    "train.py modle=cnn (a typo)",
    "train.py model.dropout=2 (out of range)",
    "eval.py ckpt_path=missing.ckpt",
    "export.py format=tflite",
    "-m mnist_lit.cluster seed=1,2 (dry run)",
    "predict.py on the ONNX file, one image",
)

#: the bare imports every command that trains or loads a checkpoint pays first
FLOOR = {
    "import torch": "import torch",
    "import lightning": "import lightning",
    "import torch, lightning": "import torch, lightning",
}


def command_lines(onnx: Path, ckpt: Path, image: Path, work_dir: Path) -> dict[str, list[str]]:
    """The timed commands (argv after ``python``), by what they show."""
    logs = f"paths.log_dir={work_dir / 'logs'}"
    return {
        "train.py --help": ["train.py", "--help"],
        "train.py modle=cnn (a typo)": ["train.py", "modle=cnn", logs],
        "train.py model.dropout=2 (out of range)": ["train.py", "model.dropout=2", logs],
        "eval.py ckpt_path=missing.ckpt": ["eval.py", "ckpt_path=missing.ckpt", logs],
        "export.py format=tflite": ["export.py", f"ckpt_path={ckpt}", "format=tflite", logs],
        "-m mnist_lit.cluster seed=1,2 (dry run)": ["-m", "mnist_lit.cluster", "seed=1,2"],
        "predict.py on the ONNX file, one image": [
            "predict.py", f"ckpt_path={onnx}", f"images={image}", logs,
        ],
        "predict.py on the checkpoint, one image": [
            "predict.py", f"ckpt_path={ckpt}", f"images={image}", logs,
        ],
        # with the startup_time callback: its metrics.json holds its launch to first step; each
        # run in a run dir of its own, as a user's (<log_dir>/train/runs/<time>[_N])
        "train.py debug=fast_dev_run": [
            "train.py", "debug=fast_dev_run", WITH_STARTUP_TIME,
            f"paths.log_dir={work_dir / 'fast_dev_run'}",
        ],
    }  # fmt: skip


def wall_seconds(argv: list[str], repeats: int, log: Path) -> dict[str, Any]:
    """Median wall seconds of ``python <argv>`` over ``repeats`` runs, and its exit codes."""
    times, codes = [], []
    with log.open("a") as out:
        for _ in range(repeats):
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, *argv], cwd=PROJECT_ROOT, stdout=out, stderr=out, check=False
            )
            times.append(time.perf_counter() - started)
            codes.append(done.returncode)
    return {"median_s": statistics.median(times), "runs_s": times, "exit_codes": sorted(set(codes))}


def predict_inputs(ckpt: Path, data_dir: Path, work_dir: Path) -> tuple[Path, Path]:
    """``ckpt`` exported to ONNX by ``export.py``, and one test digit drawn as a page would
    hold it (140x140, dark on light): what the predict commands are timed on."""
    onnx = work_dir / "model.onnx"
    export = [sys.executable, "export.py", f"ckpt_path={ckpt}", f"output={onnx}", "verify=false"]
    subprocess.run(export, cwd=PROJECT_ROOT, capture_output=True, check=True)
    digits = read_image_file(str(data_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte"))
    image = work_dir / "digit.png"
    Image.fromarray(255 - digits[0].numpy()).resize((140, 140)).save(image)
    return onnx, image


def measure_startup(
    repeats: int, ckpt: Path, data_dir: Path, work_dir: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """The floor, each command's wall time and the floor's peak RSS, all in this run."""
    work_dir.mkdir(parents=True, exist_ok=True)
    onnx, image = predict_inputs(ckpt, data_dir, work_dir)
    log = work_dir / "startup.log"
    floor = {}
    for name, code in FLOOR.items():
        floor[name] = wall_seconds(["-c", code], repeats, log)
        say(f"floor: python -c '{code}': {floor[name]['median_s']:.2f} s")
    commands = {}
    for name, argv in command_lines(onnx, ckpt, image, work_dir).items():
        commands[name] = wall_seconds(argv, repeats, log)
        say(f"{name}: {commands[name]['median_s']:.2f} s (exit {commands[name]['exit_codes']})")
    # each repeat ran in a run dir of its own
    first_steps = [
        json.loads(path.read_text()).get("startup_seconds")
        for path in sorted(work_dir.glob(f"fast_dev_run/train/runs/*/{RESULTS_FILE}"))
    ]
    first_steps = [seconds for seconds in first_steps if seconds is not None]
    rss = run_for_peak_rss(
        [sys.executable, "-c", FLOOR["import torch, lightning"]], PROJECT_ROOT, work_dir / "rss.log"
    )
    say(f"floor: peak RSS of import torch, lightning: {rss['peak_rss_bytes'] / 1e6:.0f} MB")
    return {
        "repeats": repeats,
        "floor": floor,
        "commands": commands,
        # launch to the first training step of each fast_dev_run: the median, and each
        "fast_dev_run_startup_s": statistics.median(first_steps) if first_steps else None,
        "fast_dev_run_startup_runs_s": first_steps,
        "floor_peak_rss_bytes": rss["peak_rss_bytes"],
    }
