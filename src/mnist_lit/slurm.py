"""What a run needs to know of SLURM: the job it runs in, and where a requeued job finds its run.

(Preemption and requeueing: ``processes.py``; the requeued job's command line: ``runs.py``.)
"""

from __future__ import annotations

import os

#: in a run dir: the SLURM job that trains in it (a requeued job finds its run by it)
SLURM_JOB_FILE = "slurm_job_id"


def slurm_job_id() -> str | None:
    """This SLURM job's id as ``scontrol`` names it (``<array job>_<task>`` for an array task),
    or ``None`` outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def requeued() -> bool:
    """Whether this is a SLURM job run again after a requeue (SLURM counts its restarts)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return slurm_job_id() is not None and restarts.isdigit() and int(restarts) > 0
