"""The processes of a job, with stand-in trainers (no process is started): the cores shared among
parallel jobs and DDP ranks, a started rank's command line, and the ranks awaited or killed.
(Real DDP runs: ``tests/integration/test_ddp.py``.)"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from mnist_lit import processes
from mnist_lit.cli import ddp_rank_argv
from mnist_lit.config import JOB_DIR_ENV
from mnist_lit.processes import parallel_jobs, processes_of_this_job

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
