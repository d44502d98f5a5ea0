"""SLURM preemption: stop at the end of a step with a checkpoint, then requeue the job.

SLURM signals a job before it preempts it or its time limit ends (``hydra/launcher=slurm``
submits with ``--signal=USR2@<signal_delay_s>``; Lightning's convention is USR1). This callback
turns that signal into a SIGTERM, which Lightning handles at the end of the training step: the
``resume_checkpoint`` callback saves there. Once the process is done, rank 0 requeues the job
(``scontrol requeue``); the requeued job runs again in the same run dir and resumes from that
checkpoint (``mnist_lit.cli.requeued_in``). Lightning's own auto-requeue saves inside the signal
handler, wherever the step is, so the resumed run would not be exact.
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
    """Under SLURM: a preemption signal stops the run as SIGTERM does, then the job is requeued."""

    def __init__(self) -> None:
        self.preempted: signal.Signals | None = None
        self._before: dict[signal.Signals, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if slurm_job_id() is None or self._before:
            return
        for signum in PREEMPTION_SIGNALS:
            self._before[signum] = signal.signal(signum, self._stop)

    def _stop(self, signum: int, frame: object) -> None:
        if self.preempted is None:
            self.preempted = signal.Signals(signum)
            log.info("%s: SLURM preempts this job; stopping after this step", self.preempted.name)
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler: stop at a step's end

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if self.preempted is not None and trainer.global_rank == 0:
            atexit.register(requeue, str(slurm_job_id()))  # after the checkpoint is written

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._before.items():
            signal.signal(signum, handler)
        self._before = {}


def requeue(job: str) -> None:
    """``scontrol requeue <job>``, said in one line either way."""
    try:
        done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        problem = (done.stderr or done.stdout).strip() if done.returncode else None
    except OSError as err:
        problem = str(err)
    if problem:
        print(
            f"error: `scontrol requeue {job}` failed ({problem}): resume with resume=<run dir>",
            file=sys.stderr,
        )
    else:
        print(
            f"[mnist-lit] preempted: requeued SLURM job {job}, which resumes in the same run dir",
            file=sys.stderr,
        )
