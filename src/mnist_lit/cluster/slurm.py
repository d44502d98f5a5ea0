"""SLURM preemption: stop at the end of a step with a checkpoint, then requeue the job.

SLURM signals a job before it preempts it or its time limit ends (``hydra/launcher=slurm``
submits with ``--signal=USR2@<signal_delay_s>``; Lightning's convention is USR1). This callback
turns that signal into a SIGTERM, which Lightning handles at the end of the training step: the
``resume_checkpoint`` callback saves there, and train.py ends with its line for a stopped run.
Once the process is done, rank 0 requeues the job (``scontrol requeue``); the requeued job runs
again in the same run dir and resumes from that checkpoint (``mnist_lit.cli.requeued_in``).

Why not Lightning's own auto-requeue, or submitit's: both save or requeue inside the signal
handler, wherever the step is, so the resumed run would not be exact. Installed before Lightning
installs its handlers (``setup``), this one takes the place of both.

``hydra/launcher=slurm`` adds it to the callbacks (``conf/callbacks/slurm_requeue.yaml``); it needs
nothing of the cluster extra, so a run in your own sbatch script can use it too.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
from typing import Any

import lightning as L

from mnist_lit.cli import slurm_job_id

log = logging.getLogger(__name__)

#: Lightning's convention (``--signal=USR1@N``) and submitit's (USR2)
PREEMPTION_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class RequeueOnPreemption(L.Callback):
    """Under SLURM: a preemption signal stops the run as SIGTERM does, then the job is requeued.

    Outside SLURM (no job id) it does nothing.
    """

    def __init__(self) -> None:
        self.preempted: signal.Signals | None = None
        self._before: dict[signal.Signals, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if slurm_job_id() is None or self._before:
            return
        for signum in PREEMPTION_SIGNALS:
            self._before[signum] = signal.signal(signum, self._stop)

    def _stop(self, signum: int, frame: object) -> None:
        if self.preempted is None:  # SLURM may signal again: one stop
            self.preempted = signal.Signals(signum)
            log.info("%s: SLURM preempts this job; stopping after this step", self.preempted.name)
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop at a step's end

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self.preempted is not None and trainer.global_rank == 0:
            # at exit: once the checkpoint is written and this job's process is done with it
            atexit.register(
                requeue, str(slurm_job_id()), self.preempted, str(trainer.default_root_dir)
            )
        self._restore()  # (Lightning calls no teardown hook after an exception)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._before.items():
            signal.signal(signum, handler)
        self._before = {}


def requeue(job: str, signum: signal.Signals, run_dir: str) -> None:
    """``scontrol requeue <job>``, said in one line either way (after train.py's own line)."""
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        problem = (done.stderr or done.stdout).strip() if done.returncode else None
    except OSError as err:
        problem = str(err)
    if problem:
        print(
            f"[mnist-lit] preempted by SLURM ({signum.name}), but `scontrol requeue {job}` failed"
            f" ({problem}): resume with python train.py resume={run_dir}",
            file=sys.stderr,
        )
    else:
        print(
            f"[mnist-lit] preempted by SLURM ({signum.name}): requeued job {job}, which resumes"
            f" in {run_dir}",
            file=sys.stderr,
        )
