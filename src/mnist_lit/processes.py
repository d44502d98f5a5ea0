"""The processes of a job: DDP ranks Lightning starts, parallel sweep jobs sharing cores, and a
SLURM job that is preempted.

``train.py`` runs its fit and test inside ``processes_of_this_job``; a DDP rank that Lightning
starts by re-running ``train.py`` gets its command line from ``cli.ddp_rank_argv``.

**Preemption.** Under SLURM, the signal that comes before a preemption or the time limit
(``#SBATCH --signal=USR1@120``; submitit's jobs get USR2) stops the run as SIGTERM does, at the
end of a training step, where the ``resume_checkpoint`` callback saves the checkpoint an exact
resume needs; then rank 0 requeues the job (``scontrol requeue``). The requeued job runs the same
command in the same run dir and resumes from that checkpoint (``runs.requeued_command_line``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mnist_lit.compat import started_rank_processes
from mnist_lit.config import JOB_DIR_ENV
from mnist_lit.errors import INTERRUPTED, UserError
from mnist_lit.files import atomic_write_bytes
from mnist_lit.slurm import SLURM_JOB_FILE, slurm_job_id

log = logging.getLogger(__name__)


#: what Lightning's DDP launch leaves in rank 0's environment
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")

#: the signals SLURM sends before it preempts a job: Lightning's convention (``--signal=USR1@N``)
#: and submitit's (``hydra/launcher=slurm`` submits with ``--signal=USR2@N``)
PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


@contextmanager
def processes_of_this_job(trainer: L.Trainer, output_dir: Path) -> Iterator[None]:
    """Shares the cores among this job's processes; with DDP, lets the extra ranks join this job;
    a run stopped by SIGTERM or Ctrl-C ends in one line saying how to resume it.

    Lightning leaves its launch variables (``LOCAL_RANK``, ``MASTER_PORT``...) in rank 0's
    environment and the process group open: the next job of a multirun in this process would take
    them as its own (start no ranks, wait for a peer that has exited). So afterwards the ranks are
    awaited, the group closed, and the environment and thread count restored.
    """
    saved_env = {k: os.environ.get(k) for k in (*_LAUNCH_ENV, "OMP_NUM_THREADS", JOB_DIR_ENV)}
    saved_threads = torch.get_num_threads()
    _share_cpu_cores(trainer)
    if trainer.world_size > 1:
        os.environ[JOB_DIR_ENV] = str(output_dir)
        log.info(
            "rank %d of %d: %d CPU threads",
            trainer.global_rank,
            trainer.world_size,
            torch.get_num_threads(),
        )
    failed = True
    preempted: list[signal.Signals] = []
    restore_handlers = _stop_when_preempted(preempted, output_dir, trainer.global_rank)
    try:
        yield
        failed = False
    except SystemExit:
        # Lightning ends fit or test this way on SIGTERM (SIGTERMException) and on Ctrl-C, after
        # its callbacks' on_exception (resume_checkpoint saves one there)
        if not trainer.interrupted:
            raise
        if preempted:
            raise _requeued(preempted[0], trainer, output_dir) from None
        signum = signal.SIGTERM if trainer.received_sigterm else signal.SIGINT
        raise UserError(
            f"stopped by {signum.name} at step {trainer.global_step}: resume with "
            f"python train.py resume={output_dir}",
            INTERRUPTED + signum,
        ) from None
    finally:
        restore_handlers()
        _stop_started_ranks(trainer, kill=failed)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)


def _stop_when_preempted(
    preempted: list[signal.Signals], output_dir: Path, rank: int
) -> Callable[[], None]:
    """Under SLURM: a preemption signal stops the run as SIGTERM does (at the end of a step, with
    a checkpoint) and is noted in ``preempted``. Returns what puts the former handlers back.

    Lightning's own auto-requeue saves its checkpoint inside the signal handler, wherever the
    step is, and trains on until SLURM kills the job: the resumed run would not be exact.
    """
    job = slurm_job_id()
    if job is None:
        return lambda: None
    if rank == 0:
        atomic_write_bytes(output_dir / SLURM_JOB_FILE, job.encode())
    before = {signum: signal.getsignal(signum) for signum in PREEMPTION_SIGNALS}

    def stop(signum: int, frame: object) -> None:
        if not preempted:
            preempted.append(signal.Signals(signum))
            log.info("%s: SLURM preempts this job; stopping after this step", preempted[0].name)
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop at a step's end

    for signum in PREEMPTION_SIGNALS:
        signal.signal(signum, stop)

    def restore() -> None:
        for signum, handler in before.items():
            signal.signal(signum, handler)

    return restore


def _requeued(signum: signal.Signals, trainer: L.Trainer, output_dir: Path) -> UserError:
    """Requeue this SLURM job (rank 0), once its checkpoint is saved; the line that says so."""
    job = slurm_job_id()
    where = f"at step {trainer.global_step}, checkpoint saved"
    if trainer.global_rank != 0:
        return UserError(f"preempted ({signum.name}) {where}", INTERRUPTED + signum)
    try:
        done = subprocess.run(
            ["scontrol", "requeue", str(job)], capture_output=True, text=True, check=False
        )
        problem = (done.stderr or done.stdout).strip() if done.returncode else None
    except OSError as err:
        problem = str(err)
    if problem:
        return UserError(
            f"preempted ({signum.name}) {where}, but `scontrol requeue {job}` failed ({problem}):"
            f" resume with python train.py resume={output_dir}",
            INTERRUPTED + signum,
        )
    return UserError(
        f"preempted ({signum.name}) {where}: requeued SLURM job {job}, which resumes in"
        f" {output_dir}",
        INTERRUPTED + signum,
    )


def _stop_started_ranks(trainer: L.Trainer, kill: bool) -> None:
    """Waits for the DDP ranks that Lightning started from this process, or kills them.

    Kill when this rank failed: the others would wait for it in their next collective. Lightning's
    observer thread SIGKILLs this process when one of them ends with an error; it watches the
    launcher's own list, so that list is emptied first: a failed job of a multirun then fails
    alone, as it would without DDP, instead of taking the sweep down with it.
    """
    procs = started_rank_processes(trainer)
    if not procs:
        return
    started = list(procs)
    procs.clear()
    for proc in started:
        if kill:
            proc.kill()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode and not kill:
            log.warning("DDP rank process %d ended with exit code %d", proc.pid, proc.returncode)


def _share_cpu_cores(trainer: L.Trainer) -> None:
    """Every process that trains on this machine gets an equal share of the cores.

    They are the jobs that a parallel launcher runs side by side, or the DDP ranks of a job: 2 ranks
    on 2 cores use 1 thread each, not 2 each. Lightning caps DDP ranks so itself, but only where
    ``OMP_NUM_THREADS`` is unset; the ranks it starts inherit the value set here. A rank started by
    a launcher (Lightning's, torchrun, SLURM) keeps the count it was given.
    """
    cluster = getattr(trainer.strategy, "cluster_environment", None)
    if cluster is not None and cluster.creates_processes_externally:
        return
    n_jobs = parallel_jobs()
    processes = n_jobs * trainer.num_devices
    if processes == 1 or (n_jobs == 1 and "OMP_NUM_THREADS" in os.environ):
        return  # one process, or DDP with a thread count the user chose
    threads = max(1, (os.cpu_count() or 1) // processes)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def parallel_jobs() -> int:
    """How many jobs the Hydra launcher runs side by side on this machine (``n_jobs``)."""
    if not HydraConfig.initialized():
        return 1
    hydra_config = cast(DictConfig, HydraConfig.get())  # a DictConfig, typed as its schema
    n_jobs = OmegaConf.select(hydra_config, "launcher.n_jobs", default=None)
    return n_jobs if isinstance(n_jobs, int) and n_jobs > 1 else 1
