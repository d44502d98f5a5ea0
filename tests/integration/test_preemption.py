"""A SLURM job preempted for real, as far as this machine allows: a run that believes it runs
under SLURM (srun's variables, a stand-in ``scontrol`` that records its arguments), with the
callback an sbatch script of your own adds (``callbacks=[default,slurm_requeue]``), gets the
preemption signal, saves a checkpoint, requeues itself, and the "requeued" job (the same command,
``SLURM_RESTART_COUNT=1``) resumes in the same run dir to the numbers of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mnist_lit.cli import newest_intact_checkpoint
from mnist_lit.config import PROJECT_ROOT

from ..conftest import error_line
from .conftest import RESUMABLE_RUN

#: what hydra/launcher=slurm adds to the callbacks, added by hand as in your own sbatch script
RUN = [*RESUMABLE_RUN, "callbacks=[default,slurm_requeue]"]

#: what srun sets for a one-task job (Lightning then uses its SLURMEnvironment)
SRUN = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1",
    "SLURM_NODELIST": "node01",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


def _command(run_dir: Path, data_dir: Path) -> list[str]:
    return [sys.executable, str(PROJECT_ROOT / "train.py"), *RUN, f"paths.data_dir={data_dir}",
            f"hydra.run.dir={run_dir}"]  # fmt: skip


def _metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@pytest.fixture
def under_slurm(tmp_path: Path) -> dict[str, str]:
    """srun's environment, with a stand-in ``scontrol`` first on PATH that records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return {**os.environ, **SRUN, "PATH": path, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_a_preempted_job_requeues_and_resumes_where_it_stopped(
    signum: signal.Signals, tmp_path: Path, mnist_data_dir: Path, under_slurm: dict[str, str]
) -> None:
    straight, preempted = tmp_path / "straight", tmp_path / "preempted"
    plain_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(_command(straight, mnist_data_dir), cwd=PROJECT_ROOT, env=plain_env,
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]

    process = subprocess.Popen(_command(preempted, mnist_data_dir), cwd=PROJECT_ROOT,
                               env=under_slurm, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)  # fmt: skip
    marker = preempted / "checkpoints" / "resume" / "step_0000003.ckpt"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)

    # it stops as SIGTERM stops a run, then requeues itself as the process ends
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    line = error_line(stderr, alone=False)
    assert line.startswith("error: stopped by SIGTERM at step ")
    assert stderr.rstrip().splitlines()[-1] == (
        f"[mnist-lit] preempted by SLURM ({signum.name}): requeued job 4242, which resumes in"
        f" {preempted}"
    )
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert (preempted / "slurm_job_id").read_text() == "4242"
    assert not (preempted / "metrics.json").exists()
    step = int(re.search(r"at step (\d+)", line).group(1))  # type: ignore[union-attr]
    saved = newest_intact_checkpoint(preempted)  # saved at the step where it stopped
    assert saved.name == f"step_{step:07d}.ckpt" and step >= 3

    requeued = subprocess.run(_command(preempted, mnist_data_dir), cwd=PROJECT_ROOT,
                              env={**under_slurm, "SLURM_RESTART_COUNT": "1"},
                              capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert str(saved) in requeued.stdout + requeued.stderr  # resumed from it
    assert _metrics(preempted) == _metrics(straight)  # every metric, to the last digit
    assert len(list(preempted.parent.iterdir())) == 4  # bin, scontrol.log, the two runs
