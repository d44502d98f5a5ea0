"""The processes of a job, with stand-in trainers (no process is started): the cores shared among
parallel jobs and DDP ranks, a started rank's command line, and the ranks awaited or killed.
(Real DDP runs: ``tests/integration/test_ddp.py``.)"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from mnist_lit.processes import parallel_jobs, processes_of_this_job
from mnist_lit.slurm import SLURM_JOB_FILE

from mnist_lit import processes
from mnist_lit.cli import ddp_rank_argv
from mnist_lit.config import JOB_DIR_ENV
from mnist_lit.errors import UserError

from ..conftest import compose_config


def stand_in_trainer(
    devices: int = 1, external: bool = False, procs: list | None = None
) -> SimpleNamespace:
    cluster = SimpleNamespace(creates_processes_externally=external)
    strategy = SimpleNamespace(cluster_environment=cluster, launcher=SimpleNamespace(procs=procs))
    return SimpleNamespace(
        num_devices=devices, world_size=devices, global_rank=0, strategy=strategy
    )


class StandInRank:
    """What ``_stop_started_ranks`` uses of a ``Popen``."""

    def __init__(self, returncode: int = 0) -> None:
        self.pid, self.returncode, self.killed, self.waited = 4242, returncode, False, False

    def kill(self) -> None:
        self.killed = True

    def wait(self, timeout: float | None = None) -> int:
        self.waited = True
        return self.returncode


@pytest.fixture(autouse=True)
def _keep_threads_and_env(monkeypatch: pytest.MonkeyPatch):
    threads = torch.get_num_threads()
    for key in ("OMP_NUM_THREADS", JOB_DIR_ENV, "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    yield
    torch.set_num_threads(threads)
    HydraConfig.instance().cfg = None


# ----------------------------------------------------------------------------- DDP ranks


def test_a_process_lightning_did_not_start_composes_its_own_config() -> None:
    assert ddp_rank_argv() is None


def test_rank_0_is_not_a_started_rank(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(JOB_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert ddp_rank_argv() is None


def test_a_started_rank_joins_its_jobs_config_and_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(JOB_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "1")
    argv = ddp_rank_argv()
    assert argv is not None
    assert f"--config-path={tmp_path / '.hydra'}" in argv and "--config-name=config" in argv
    assert any(a.startswith("hydra.run.dir=") and str(tmp_path) in a for a in argv)
    assert (tmp_path / ".pl_hydra_rank_1").is_dir()  # its own Hydra files and log go there


# ----------------------------------------------------------------------------- sharing cores


def test_one_job_outside_hydra(tmp_path: Path) -> None:
    assert parallel_jobs() == 1


def test_the_parallel_launcher_runs_its_n_jobs_side_by_side(tmp_path: Path) -> None:
    compose_config("train", ["hydra/launcher=parallel"], tmp_path / "run")
    assert parallel_jobs() == 2
    compose_config("train", [], tmp_path / "run")
    assert parallel_jobs() == 1


def test_ddp_ranks_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    processes._share_cpu_cores(stand_in_trainer(devices=2))
    assert torch.get_num_threads() == 4 and os.environ["OMP_NUM_THREADS"] == "4"


def test_parallel_jobs_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setattr(processes, "parallel_jobs", lambda: 4)
    processes._share_cpu_cores(stand_in_trainer(devices=1))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("case", ["one process", "threads chosen", "started by a launcher"])
def test_the_thread_count_is_left_alone(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    trainer = stand_in_trainer(devices=1 if case == "one process" else 2)
    if case == "threads chosen":
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if case == "started by a launcher":
        trainer = stand_in_trainer(devices=2, external=True)
    processes._share_cpu_cores(trainer)
    assert torch.get_num_threads() == before


def test_a_job_leaves_the_environment_and_threads_as_it_found_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    before = torch.get_num_threads()
    with processes_of_this_job(stand_in_trainer(devices=2), tmp_path):
        assert os.environ[JOB_DIR_ENV] == str(tmp_path)  # for the ranks Lightning starts
        os.environ["MASTER_PORT"] = "12910"  # what Lightning's launch leaves behind
    assert JOB_DIR_ENV not in os.environ and "MASTER_PORT" not in os.environ
    assert "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() == before


# ----------------------------------------------------------------------------- started ranks


def test_started_ranks_are_awaited_after_the_job(tmp_path: Path) -> None:
    ranks = [StandInRank(), StandInRank()]
    procs = list(ranks)
    with processes_of_this_job(stand_in_trainer(procs=procs), tmp_path):
        pass
    assert procs == []  # emptied first: Lightning's watcher no longer sees them
    assert all(r.waited and not r.killed for r in ranks)


def test_started_ranks_are_killed_when_the_job_fails(tmp_path: Path) -> None:
    ranks = [StandInRank()]
    procs = list(ranks)
    with (
        pytest.raises(RuntimeError),
        processes_of_this_job(stand_in_trainer(procs=procs), tmp_path),
    ):
        raise RuntimeError("rank 0 failed")
    assert procs == [] and all(r.killed and r.waited for r in ranks)


# ----------------------------------------------------------------------------- SLURM preemption


@pytest.fixture
def under_slurm(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """An array task of SLURM job 7; ``scontrol`` stood in for: the commands it was given."""
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    ran: list[list[str]] = []

    def scontrol(command: list[str], **_: object) -> SimpleNamespace:
        ran.append(command)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(processes.subprocess, "run", scontrol)
    return ran


def _stopped_trainer() -> SimpleNamespace:
    trainer = stand_in_trainer()
    trainer.interrupted, trainer.received_sigterm, trainer.global_step = True, True, 5
    return trainer


def test_outside_slurm_the_preemption_signals_are_left_alone(tmp_path: Path) -> None:
    before = [signal.getsignal(s) for s in processes.PREEMPTION_SIGNALS]
    with processes_of_this_job(stand_in_trainer(), tmp_path):
        assert [signal.getsignal(s) for s in processes.PREEMPTION_SIGNALS] == before
    assert not (tmp_path / SLURM_JOB_FILE).exists()


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_a_preempted_slurm_job_stops_as_sigterm_does_and_requeues(
    signum: signal.Signals, tmp_path: Path, under_slurm: list[list[str]]
) -> None:
    before = [signal.getsignal(s) for s in processes.PREEMPTION_SIGNALS]
    terms: list[int] = []
    previous_term = signal.signal(signal.SIGTERM, lambda s, f: terms.append(s))
    try:
        with (
            pytest.raises(UserError) as caught,
            processes_of_this_job(_stopped_trainer(), tmp_path),
        ):
            assert (tmp_path / SLURM_JOB_FILE).read_text() == "7_3"  # the run's job, recorded
            os.kill(os.getpid(), signum)
            os.kill(os.getpid(), signum)  # SLURM may signal again: one stop
            assert terms == [signal.SIGTERM]  # Lightning's SIGTERM handler: stop at a step's end
            raise SystemExit(1)  # how Lightning then ends fit
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    assert under_slurm == [["scontrol", "requeue", "7_3"]]
    assert caught.value.exit_code == 128 + signum
    assert "requeued SLURM job 7_3" in str(caught.value) and "step 5" in str(caught.value)
    assert [signal.getsignal(s) for s in processes.PREEMPTION_SIGNALS] == before


def test_a_failed_requeue_says_how_to_resume(
    tmp_path: Path, under_slurm: list[list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(command: list[str], **_: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", "scontrol")

    monkeypatch.setattr(processes.subprocess, "run", missing)
    previous_term = signal.signal(signal.SIGTERM, lambda s, f: None)
    try:
        with (
            pytest.raises(UserError) as caught,
            processes_of_this_job(_stopped_trainer(), tmp_path),
        ):
            os.kill(os.getpid(), signal.SIGUSR1)
            raise SystemExit(1)
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    assert f"resume with python train.py resume={tmp_path}" in str(caught.value)
    assert caught.value.exit_code == 128 + signal.SIGUSR1
