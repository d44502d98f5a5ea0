"""The processes of a run: one at a time in a run dir, the cores they share, and how they stop.

``train.py`` fits and tests inside ``one_writer`` and ``processes_of_this_job``; the run's
overrides become its own through ``ResumeAccepted``.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import torch
from filelock import FileLock, Timeout

from mnist_lit.callbacks.cpu_threads import cpu_share
from mnist_lit.cli import JOB_DIR_ENV, accept_resumed_config
from mnist_lit.errors import INTERRUPTED, UserError

log = logging.getLogger(__name__)


class ResumeAccepted(L.Callback):
    """A resumed run's overrides become its own once its fit passed its checks (the schedule's,
    ``LitClassifier.on_fit_start``): a refused resume leaves ``.hydra/`` as it was."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            accept_resumed_config(self.run_dir)


@contextmanager
def one_writer(run_dir: Path, trainer: L.Trainer) -> Iterator[None]:
    """One process trains in a run dir at a time (its DDP ranks are that one): a second
    ``resume=`` of the same run is refused in one line instead of writing beside the first."""
    if not trainer.is_global_zero:
        yield
        return
    lock = FileLock(run_dir / ".train.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UserError(
            f"another process is training in {run_dir}: wait for it, or stop it first"
        ) from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def processes_of_this_job(trainer: L.Trainer, output_dir: Path) -> Iterator[None]:
    """The job's processes share the cores; a run stopped by SIGTERM or Ctrl-C ends in one line
    that says how to resume it; what DDP leaves in this process is cleared for the next job."""
    launch = ["MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", JOB_DIR_ENV]
    launch_env = [*launch, "OMP_NUM_THREADS"]
    saved_env, saved_threads = {k: os.environ.get(k) for k in launch_env}, torch.get_num_threads()
    share_cpu_cores(trainer)
    if trainer.world_size > 1:
        rank, ranks, threads = trainer.global_rank, trainer.world_size, torch.get_num_threads()
        log.info("rank %d of %d: %d CPU threads", rank, ranks, threads)
        os.environ[JOB_DIR_ENV] = str(output_dir)  # the ranks Lightning starts join this job's dir
    try:
        yield
    except SystemExit:  # how Lightning ends fit or test on SIGTERM and Ctrl-C, once it saved
        if not trainer.interrupted:
            raise
        signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
        raise UserError(
            f"stopped by {signum.name} at step {trainer.global_step}: resume with "
            f"python train.py resume={output_dir}",
            INTERRUPTED + signum,
        ) from None
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved_env.items():  # Lightning's launch leaves them in rank 0's env
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)


def share_cpu_cores(trainer: L.Trainer) -> None:
    """Each process that trains here gets its share of the CPUs it may use (``cpu_allowance``):
    the jobs a parallel launcher runs side by side, times the DDP ranks of each (2 ranks on 2
    cores: 1 thread each), also in the ranks it starts (``OMP_NUM_THREADS``)."""
    cluster = getattr(trainer.strategy, "cluster_environment", None)
    if cluster is not None and cluster.creates_processes_externally:
        return  # a launcher (torchrun, SLURM) gave each rank its count
    processes, threads = cpu_share(trainer)
    if processes > 1 and not (processes == trainer.num_devices and "OMP_NUM_THREADS" in os.environ):
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # what the DDP ranks it starts inherit
