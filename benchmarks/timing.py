"""How the benchmark times what it runs: clocks, step windows, process settings, machine facts.

What each figure includes and why it is taken this way: benchmarks/README.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from mnist_lit.train import quiet_known_noise

GB = 1e9


@dataclass(frozen=True)
class Plan:
    """How much work each part does: the full benchmark or the smoke-test sized ``--quick``."""

    quick: bool
    #: repeats of each throughput figure (the median is reported)
    repeats: int
    #: batches run before the clock starts, and batches timed, per model
    warmup: dict[str, int]
    timed: dict[str, int]
    #: the pytorch/examples recipe stops after this many epochs if it has not reached 99.0 %
    examples_max_epochs: int
    #: training batches per epoch in part 3 (None: every batch)
    tta_batches: int | None
    #: test images per accuracy evaluation in part 3 (None: the whole 10k test set)
    tta_test_images: int | None
    #: timed passes over the test set in part 4 (after one warm-up pass), and batches per pass
    eval_repeats: int
    eval_batches: int | None
    #: overrides added to the 1-epoch default run whose peak RSS is measured
    default_run_extra: tuple[str, ...]
    #: DataLoader worker processes of the pytorch/examples side (``--examples-workers``)
    examples_workers: int
    #: the project's share of a step, per model: (epochs, batches an epoch or None for all,
    #: steps a block, steps left out after a switch), callback_cost.ShareRun
    share_runs: dict[str, tuple[int, int | None, int, int]]
    #: runs of each command in part 5 (start-up; the median is reported)
    startup_repeats: int = 5


# ------------------------------------------------------------------------- step windows


class StepWindow(L.Callback):
    """Times whole training iterations ``warmup .. warmup + timed - 1`` of a fit, end to end.

    From the end of batch ``warmup - 1`` to the end of the last timed batch: ``timed`` batch
    fetches, steps and every hook, logger and callback that runs between them.
    """

    def __init__(self, warmup: int, timed: int) -> None:
        assert warmup >= 1, "the window starts at the end of a warm-up batch"
        self.warmup, self.timed = warmup, timed
        self.seconds = math.nan
        self._start = 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if idx == self.warmup - 1:
            self._start = time.perf_counter()
        elif idx == self.warmup + self.timed - 1:
            self.seconds = time.perf_counter() - self._start


def autocast_for(precision: object) -> contextlib.AbstractContextManager[Any]:
    """The autocast that Lightning's ``precision`` puts around a training step on the CPU."""
    if str(precision) == "bf16-mixed":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if str(precision) == "16-mixed":
        return torch.autocast("cpu", dtype=torch.float16)
    return contextlib.nullcontext()


def seconds_of_steps(
    net: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    warmup: int,
    timed: int,
    precision: object = "32-true",
) -> float:
    """Seconds of ``timed`` whole iterations (get a batch, one training step) after ``warmup``:
    the hand-written loops' window, the one that ``StepWindow`` times in a fit.

    The step of pytorch/examples' ``train()`` (its every-10-batches log print left out: output)
    plus the per-batch schedule step, so the work is that of the Lightning side; ``precision``
    puts the forward pass and loss under the autocast that Lightning's would.
    """
    net.train()
    iterator = iter(batches)
    start = time.perf_counter()
    for step in range(warmup + timed):
        if step == warmup:
            start = time.perf_counter()
        images, labels = next(iterator)
        optimizer.zero_grad()
        with autocast_for(precision):
            loss = F.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - start


def seconds_of_passes(one_pass: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``one_pass``, after one more call as a warm-up."""
    one_pass()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        one_pass()
        seconds.append(time.perf_counter() - started)
    return seconds


# ------------------------------------------------------------------- accuracy


def accuracy_of(net: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> float:
    """Accuracy of ``net`` (eval mode, no grad) on the batches; leaves it in its former mode."""
    was_training = net.training
    net.eval()
    correct = total = 0
    with torch.inference_mode():
        for images, labels in batches:
            correct += int((net(images).argmax(dim=1) == labels).sum())
            total += len(labels)
    net.train(was_training)
    return correct / total


# ----------------------------------------------------------------------------- memory


#: runs a command and writes its exit code and peak RSS to a file. A child started straight from
#: this process would report at least this process's RSS: Linux carries the high-water mark of the
#: parent's memory, which a forked (or vforked) child shares, over to the child's ``execve``. A
#: small interpreter in between leaves the command's own peak alone.
RSS_WRAPPER = """
import json, os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024  # KiB on Linux
with open(sys.argv[1], "w") as out:
    json.dump({"returncode": os.waitstatus_to_exitcode(status), "peak_rss_bytes": peak}, out)
"""


def run_for_peak_rss(command: list[str], cwd: Path, log_path: Path) -> dict[str, Any]:
    """Run ``command`` in a fresh process: its exit code, peak RSS in bytes, and wall seconds."""
    usage_path = log_path.with_suffix(".rss.json")
    wrapped = [sys.executable, "-c", RSS_WRAPPER, str(usage_path), *command]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with log_path.open("w") as log:
        subprocess.run(wrapped, cwd=cwd, stdout=log, stderr=log, env=env, check=True)
    wall = time.perf_counter() - started
    return {**json.loads(usage_path.read_text()), "wall_s": wall}


# ------------------------------------------------------------------ process and machine


def pin_malloc() -> bool:
    """Keep glibc's malloc from handing memory back to the system between steps (glibc only).

    One process trains many pipelines in turn, and how the earlier ones left the heap must not
    decide whether the next one's activations come from the heap or from fresh ``mmap`` pages
    every step. Pinned (allocations under 32 MB from the heap, the heap not trimmed), each runs
    as in a fresh ``python train.py`` process. False where there is no glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def settle_process() -> bool:
    """The process-wide settings every pipeline is timed under; True if malloc got pinned."""
    malloc_pinned = pin_malloc()
    quiet_known_noise()
    # the project's trainer turns this on (trainer.deterministic=true) for the whole process;
    # on from the start, every pipeline runs under the same setting whatever the order
    torch.use_deterministic_algorithms(True)
    # and its build_trainer leaves out filling new tensors with NaN (a debugging aid of
    # deterministic mode), process-wide too: so from the start, for every pipeline alike
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    return malloc_pinned


def machine_facts() -> dict[str, Any]:
    """The CPU, threads and versions the figures belong to."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_start": os.getloadavg()[0],
    }
