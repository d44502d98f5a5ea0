"""Runs that survive: a run SIGKILLed mid-epoch and resumed ends with the uninterrupted numbers.

The real command line, killed for real. (The command line resume= becomes, the batches' position
and resuming in-process: tests/unit/test_runs.py, test_datamodule.py, test_train.py.)
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_lit.cli import newest_intact_checkpoint
from mnist_lit.config import PROJECT_ROOT

from ..conftest import QUICK, error_line, run_cli
from .conftest import RESUMABLE_RUN, kill_after

RUN = RESUMABLE_RUN


def _metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def _start(run_dir: Path, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "train.py"), *RUN, f"paths.data_dir={data_dir}",
         f"hydra.run.dir={run_dir}"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_numbers(tmp_path: Path, mnist_data_dir) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    data = f"paths.data_dir={mnist_data_dir}"
    done = run_cli("train.py", *RUN, data, f"hydra.run.dir={straight}")
    assert done.returncode == 0, done.stderr[-2000:]

    process = _start(killed, mnist_data_dir)
    kill_after(process, killed / "checkpoints" / "resume" / "step_0000006.ckpt")
    assert not (killed / "metrics.json").exists()
    # a damaged newest checkpoint (a full disk, a copy cut short) is skipped for the one before
    newest = newest_intact_checkpoint(killed)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    resumed = run_cli("train.py", f"resume={killed}", data)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert str(newest) in resumed.stderr  # the warning that it was skipped

    assert _metrics(killed) == _metrics(straight)  # every metric, to the last digit
    last_straight = _weights(straight / "checkpoints" / "last.ckpt")
    last_resumed = _weights(killed / "checkpoints" / "last.ckpt")
    assert last_straight.keys() == last_resumed.keys()
    for name, tensor in last_straight.items():
        assert torch.equal(tensor, last_resumed[name]), name
    # the same run dir and TensorBoard run, no second one
    assert sorted(p.name for p in killed.iterdir() if p.is_dir()) == [
        ".hydra",
        "checkpoints",
        "tensorboard",
    ]
    assert len(list((killed / "tensorboard").glob("events.out.tfevents.*"))) >= 2


def test_resume_cli_error_is_one_line(tmp_path: Path) -> None:
    result = run_cli("train.py", f"resume={tmp_path / 'nothing'}")
    assert result.returncode == 2
    assert f"resume={tmp_path / 'nothing'}" in error_line(result.stderr)


def _files(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_a_copied_or_moved_run_dir_resumes_on_its_own_files(
    tmp_path: Path, mnist_data_dir: Path
) -> None:
    """Checkpoints and metrics.json store absolute paths: a copy resumes from, tests and names its
    own checkpoints and leaves the original's files as they were; a moved run resumes where it is
    now and leaves nothing at its old place."""
    first, copy, moved = tmp_path / "first", tmp_path / "copy", tmp_path / "moved"
    run = [*QUICK, "model=mlp", "scheduler=none", "callbacks.test_images=null"]
    done = run_cli("train.py", *run, f"paths.data_dir={mnist_data_dir}", f"hydra.run.dir={first}")
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.copytree(first, copy)
    first.rename(moved)
    untouched = _files(moved)

    for run_dir in (copy, moved):
        resumed = run_cli("train.py", f"resume={run_dir}", "trainer.max_epochs=2")
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        summary = json.loads((run_dir / "metrics.json").read_text())
        assert Path(summary["best_ckpt"]).parent == run_dir / "checkpoints"
        assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)[
            "global_step"
        ] == 16  # fmt: skip
        if run_dir == copy:
            assert _files(moved) == untouched
    assert not first.exists()
    assert _metrics(copy) == _metrics(moved)  # the same checkpoint, resumed the same way


def _lr_column(metrics_csv: Path) -> dict[int, float]:
    with metrics_csv.open() as file:
        return {int(r["step"]): float(r["lr-Adam"]) for r in csv.DictReader(file) if r["lr-Adam"]}


@pytest.mark.slow
def test_resume_with_another_schedule(tmp_path: Path, mnist_data_dir: Path) -> None:
    """A longer one-cycle fails at start-up in one line; ``scheduler=none`` goes on at the
    config's lr (not the one the schedule ended at) and the CSV log of the first part stays."""
    run_dir = tmp_path / "run"
    first = [*QUICK, "model=mlp", "logger=csv", "test=false", "trainer.log_every_n_steps=1"]
    done = run_cli(
        "train.py", *first, f"paths.data_dir={mnist_data_dir}", f"hydra.run.dir={run_dir}"
    )
    assert done.returncode == 0, done.stderr[-2000:]

    longer = run_cli("train.py", f"resume={run_dir}", "trainer.max_epochs=3")
    assert longer.returncode == 2
    line = error_line(longer.stderr, alone=False)
    assert "OneCycleLR" in line and "24" in line  # the schedule, and the steps this run plans
    assert "scheduler=none" in line  # the fix

    fixed = run_cli(
        "train.py",
        f"resume={run_dir}",
        "trainer.max_epochs=2",
        "scheduler=none",
        "optimizer.lr=5e-4",
    )
    assert fixed.returncode == 0, fixed.stderr[-2000:]
    before = _lr_column(run_dir / "csv" / "metrics.csv")
    after = _lr_column(run_dir / "csv" / "resumed_at_step_0000008" / "metrics.csv")
    assert sorted(before) == list(range(8)) and before[7] < 1e-3  # the one-cycle's annealing
    assert after == {step: 5e-4 for step in range(8, 16)}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_run_saves_a_checkpoint_and_says_how_to_resume(
    signum: signal.Signals, tmp_path: Path, mnist_data_dir: Path
) -> None:
    """What a scheduler (SIGTERM) or Ctrl-C (SIGINT) does: exit 128 + signal, one line."""
    run_dir = tmp_path / "stopped"
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "train.py"), *RUN,
         f"paths.data_dir={mnist_data_dir}", f"hydra.run.dir={run_dir}"],
        cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    marker = run_dir / "checkpoints" / "resume" / "step_0000003.ckpt"
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum
    assert f"resume={run_dir}" in error_line(stderr, alone=False)
    assert not (run_dir / "metrics.json").exists()
    assert newest_intact_checkpoint(run_dir)  # what resume= goes on from

    resumed = run_cli("train.py", f"resume={run_dir}", f"paths.data_dir={mnist_data_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run_dir / "metrics.json").exists()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path) -> Path:
    """The run the killed ones are compared with."""
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = run_cli("train.py", *RUN, f"paths.data_dir={mnist_data_dir}", f"hydra.run.dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


def _checkpoint_being_written(run_dir: Path) -> bool:
    """A checkpoint's temporary file exists (only while it is written), and one before it."""
    folder = run_dir / "checkpoints"
    return any(folder.rglob(".*.tmp")) and any(folder.rglob("*.ckpt"))


#: when to SIGKILL: a moment each, found by what the run writes then
KILL_MOMENTS = {
    # fit_metrics.json is written when the fit has ended, just before testing
    "during its test": lambda run_dir: (run_dir / "fit_metrics.json").exists(),
    "during a checkpoint write": _checkpoint_being_written,
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(KILL_MOMENTS))
def test_killed_at_a_moment_resumes_to_the_same_results(
    moment: str, uninterrupted: Path, tmp_path: Path, mnist_data_dir: Path
) -> None:
    """SIGKILLed at the moment named, resumed: the same metrics, epochs and tested checkpoint."""
    killed = tmp_path / "killed"
    process = _start(killed, mnist_data_dir)
    reached = KILL_MOMENTS[moment]
    deadline = time.monotonic() + 240
    while not reached(killed):
        if process.poll() is not None:
            pytest.skip(f"the run ended before the moment came ({moment}): too quick to catch")
        assert time.monotonic() < deadline, f"never {moment}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (killed / "metrics.json").exists()

    resumed = run_cli("train.py", f"resume={killed}", f"paths.data_dir={mnist_data_dir}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    want = json.loads((uninterrupted / "metrics.json").read_text())
    got = json.loads((killed / "metrics.json").read_text())
    assert got["metrics"] == want["metrics"]
    assert got["epochs"] == want["epochs"]
    assert Path(got["best_ckpt"]).name == Path(want["best_ckpt"]).name
    assert not any((killed / "checkpoints").rglob(".*.tmp"))
