"""The thread policy on the real machine: a process that keeps a core busy is seen, and a run
started beside it trains with one thread fewer. Every busy process is ended by the test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_lit.callbacks.cpu_threads import CoreLoad, threads_for

from ..conftest import QUICK, run_cli

BUSY = [sys.executable, "-c", "while True: pass"]


@pytest.fixture
def busy_core() -> Iterator[subprocess.Popen]:
    """One process spinning on a core for at most 5 minutes; killed at the end, whatever
    happened."""
    # its own process group: `timeout` (the bound if this test is killed) and the spinner end
    # together
    process = subprocess.Popen(["timeout", "300", *BUSY], start_new_session=True)
    try:
        time.sleep(0.5)  # scheduled and spinning
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_a_busy_core_is_seen_and_costs_a_thread(busy_core: subprocess.Popen) -> None:
    load = CoreLoad()
    time.sleep(0.5)
    busy = load.others()
    assert busy >= 0.5
    assert threads_for(len(os.sched_getaffinity(0)), busy) == len(os.sched_getaffinity(0)) - 1


@pytest.mark.skipif(len(os.sched_getaffinity(0)) != 2, reason="the counts of a 2-CPU machine")
def test_a_run_beside_a_busy_core_trains_with_one_thread(
    busy_core: subprocess.Popen, tmp_path: Path, mnist_data_dir: Path
) -> None:
    run = [o for o in QUICK if not o.startswith("callbacks.cpu_threads")]  # auto, the default
    result = run_cli(
        "train.py",
        *run,
        "model=mlp",
        "test=false",
        f"paths.data_dir={mnist_data_dir}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["threads"] == 1
