"""Runs that survive: a run SIGKILLed mid-epoch and resumed ends with the uninterrupted numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnist_lit.config import PROJECT_ROOT
from mnist_lit.data import MNISTDataModule
from mnist_lit.resume import ResumeError, newest_intact_checkpoint, resume_command_line

from .conftest import QUICK, run_cli

#: 2 epochs of 8 batches with dropout (the MLP's): a checkpoint every 3 steps, so 3 and 6 fall
#: inside the first epoch
RUN = [
    *QUICK,
    "model=mlp",
    "trainer.max_epochs=2",
    "callbacks.resume_checkpoint.every_n_train_steps=3",
    "callbacks.sample_batch=null",
    "callbacks.test_images=null",
]


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


def _kill_after(process: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    """SIGKILL the run as soon as ``marker`` (a checkpoint) appears: mid-epoch, mid-write..."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{marker} never appeared"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_numbers(tmp_path: Path, mnist_data_dir) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    data = f"paths.data_dir={mnist_data_dir}"
    done = run_cli("train.py", *RUN, data, f"hydra.run.dir={straight}")
    assert done.returncode == 0, done.stderr[-2000:]

    process = _start(killed, mnist_data_dir)
    _kill_after(process, killed / "checkpoints" / "resume" / "step_0000006.ckpt")
    assert not (killed / "metrics.json").exists()
    # a damaged newest checkpoint (a full disk, a copy cut short) is skipped for the one before
    newest = newest_intact_checkpoint(killed)
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])

    resumed = run_cli("train.py", f"resume={killed}", data)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"not resuming from {newest}" in resumed.stderr

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


def test_resume_rewrites_the_command_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text("- model=mlp\n- trainer.max_epochs=2\n")
    with pytest.raises(ResumeError, match="no checkpoint to resume from"):
        resume_command_line([f"resume={run_dir}"], tmp_path)
    assert resume_command_line(["model=cnn"], tmp_path) == ["model=cnn"]  # no resume: as is


@pytest.mark.parametrize(
    "argv, message",
    [
        (["resume=/no/such/run"], "is not a run dir"),
        (["resume=last"], "found no run under"),
        (["-m", "resume=/x"], "resumes one run"),
    ],
)
def test_resume_errors_are_one_line(argv: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ResumeError, match=message) as caught:
        resume_command_line(argv, tmp_path)
    assert "\n" not in str(caught.value)


def test_resume_cli_error_is_one_line(tmp_path: Path) -> None:
    result = run_cli("train.py", f"resume={tmp_path / 'nothing'}")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: resume=")


def test_train_batches_resume_mid_epoch(mnist_data_dir: Path) -> None:
    """A loader restored from ``state_dict`` yields the rest of the epoch, augmented the same."""
    datamodule = MNISTDataModule(
        data_dir=str(mnist_data_dir), batch_size=256, augment={"shift": 2, "degrees": 10}
    )
    datamodule.setup()
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(3)
    whole_epoch = list(loader)
    partial = iter(loader)
    for _ in range(5):
        next(partial)
    state = loader.state_dict()
    assert state == {"epoch": 3, "served": 5}

    restored = datamodule.train_dataloader()
    restored.load_state_dict(state)
    restored.sampler.set_epoch(3)
    rest = list(restored)
    assert len(rest) == len(whole_epoch) - 5
    for (images, labels), (want_images, want_labels) in zip(rest, whole_epoch[5:], strict=True):
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
    # the next epoch is whole again
    restored.sampler.set_epoch(4)
    assert len(list(restored)) == len(whole_epoch)
