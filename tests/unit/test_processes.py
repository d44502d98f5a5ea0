"""The processes of a job, with stand-in trainers (no process is started): the cores shared among
parallel jobs and DDP ranks, a started rank's command line, and what a job leaves behind.
(Real DDP runs: ``tests/integration/test_ddp.py``; SLURM preemption: ``test_cluster.py``.)"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.core.hydra_config import HydraConfig

from mnist_lit.callbacks import cpu_threads
from mnist_lit.cli import JOB_DIR_ENV, ddp_rank_argv
from mnist_lit.errors import UserError
from mnist_lit.processes import processes_of_this_job, share_cpu_cores

from ..conftest import compose_config


def stand_in_trainer(devices: int = 1, external: bool = False) -> SimpleNamespace:
    cluster = SimpleNamespace(creates_processes_externally=external)
    strategy = SimpleNamespace(cluster_environment=cluster)
    return SimpleNamespace(
        num_devices=devices, world_size=devices, global_rank=0, strategy=strategy
    )


@pytest.fixture(autouse=True)
def _keep_threads_and_env():
    # saved and put back by hand: monkeypatch.delenv of an unset variable records nothing, so
    # the OMP_NUM_THREADS that share_cpu_cores sets would outlive the test (and reach the DDP
    # tests that read it)
    threads = torch.get_num_threads()
    keys = ("OMP_NUM_THREADS", JOB_DIR_ENV, "LOCAL_RANK")
    saved = {key: os.environ.pop(key, None) for key in keys}
    yield
    for key, value in saved.items():
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value
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


def test_one_job_outside_hydra_keeps_its_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_threads, "cpu_allowance", lambda: 8)
    before = torch.get_num_threads()
    share_cpu_cores(stand_in_trainer())
    assert torch.get_num_threads() == before and "OMP_NUM_THREADS" not in os.environ


def test_the_parallel_launcher_runs_its_n_jobs_side_by_side(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cpu_threads, "cpu_allowance", lambda: 8)
    before = torch.get_num_threads()
    compose_config("train", [], tmp_path / "run")  # the default launcher: one job at a time
    share_cpu_cores(stand_in_trainer())
    assert torch.get_num_threads() == before
    compose_config("train", ["hydra/launcher=parallel"], tmp_path / "run")  # n_jobs: 2
    share_cpu_cores(stand_in_trainer())
    assert torch.get_num_threads() == 4 and os.environ["OMP_NUM_THREADS"] == "4"


def test_ddp_ranks_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_threads, "cpu_allowance", lambda: 8)
    share_cpu_cores(stand_in_trainer(devices=2))
    assert torch.get_num_threads() == 4 and os.environ["OMP_NUM_THREADS"] == "4"


def test_parallel_jobs_share_the_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cpu_threads, "cpu_allowance", lambda: 8)
    compose_config("train", ["hydra/launcher=parallel", "hydra.launcher.n_jobs=4"], tmp_path)
    share_cpu_cores(stand_in_trainer(devices=1))
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("case", ["one process", "threads chosen", "started by a launcher"])
def test_the_thread_count_is_left_alone(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    trainer = stand_in_trainer(devices=1 if case == "one process" else 2)
    if case == "threads chosen":
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
    if case == "started by a launcher":
        trainer = stand_in_trainer(devices=2, external=True)
    share_cpu_cores(trainer)
    assert torch.get_num_threads() == before


def test_a_job_leaves_the_environment_and_threads_as_it_found_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cpu_threads, "cpu_allowance", lambda: 8)
    before = torch.get_num_threads()
    with processes_of_this_job(stand_in_trainer(devices=2), tmp_path):
        assert os.environ[JOB_DIR_ENV] == str(tmp_path)  # for the ranks Lightning starts
        assert os.environ["OMP_NUM_THREADS"] == "4"  # what those ranks inherit
        os.environ["MASTER_PORT"] = "12910"  # what Lightning's launch leaves behind
    assert JOB_DIR_ENV not in os.environ and "MASTER_PORT" not in os.environ
    assert "OMP_NUM_THREADS" not in os.environ and torch.get_num_threads() == before


# ----------------------------------------------------------------------------- a stopped run


@pytest.mark.parametrize(
    ("sigterm", "name", "code"), [(True, "SIGTERM", 143), (False, "SIGINT", 130)]
)
def test_a_stopped_run_ends_in_one_line_that_says_how_to_resume(
    sigterm: bool, name: str, code: int, tmp_path: Path
) -> None:
    """Lightning ends fit with ``SystemExit`` on SIGTERM and Ctrl-C, once it saved a checkpoint."""
    trainer = stand_in_trainer()
    trainer.interrupted, trainer.received_sigterm, trainer.global_step = True, sigterm, 5
    with pytest.raises(UserError) as caught, processes_of_this_job(trainer, tmp_path):
        raise SystemExit(1)
    assert caught.value.exit_code == code
    assert str(caught.value) == (
        f"stopped by {name} at step 5: resume with python train.py resume={tmp_path}"
    )


def test_another_exit_is_left_as_it_is(tmp_path: Path) -> None:
    trainer = stand_in_trainer()
    trainer.interrupted = False
    with pytest.raises(SystemExit) as caught, processes_of_this_job(trainer, tmp_path):
        raise SystemExit(3)
    assert caught.value.code == 3
