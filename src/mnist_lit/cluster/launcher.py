"""A refused SLURM submission, said in one line.

``sbatch`` refuses a job it can never run (a GPU on a cluster without any, a partition that does
not exist, more memory than a node has) with a message of its own, which submitit raises as a
``FailedJobError`` from deep in its submission code. ``hydra/launcher=slurm``'s launcher
(``hydra_plugins.mnist_lit_cluster.SlurmLauncher``: Hydra finds launchers only in the
``hydra_plugins`` package) turns it into one line that names the refused ``#SBATCH`` option and
the config key to change, with ``submission_error`` (exit code 2).
"""

from __future__ import annotations

import re

from submitit.core.utils import FailedJobError

from mnist_lit.errors import UserError

#: what sbatch says (a pattern of its message) -> the option it refused, and what to change
REFUSALS: tuple[tuple[str, str, str], ...] = (
    (
        r"generic resource|gres",
        "--gpus-per-node/--gres",
        "no such GPUs here: trainer=cpu asks for none; or set hydra.launcher.gpus_per_node=null"
        " and hydra.launcher.gres=<one that sinfo -o %G lists>",
    ),
    (r"partition", "--partition", "set hydra.launcher.partition=<one that sinfo lists>"),
    (r"account", "--account", "set hydra.launcher.account=<sacctmgr show assoc user=$USER>"),
    (r"qos", "--qos", "set hydra.launcher.qos"),
    (r"memory", "--mem", "set hydra.launcher.mem_gb=<at most a node's: sinfo -o %m, in MB>"),
    (r"--time|time limit", "--time", "set hydra.launcher.timeout_min"),
    (
        r"node configuration|processors|cpus|tasks",
        "--nodes/--ntasks-per-node/--cpus-per-task",
        "set hydra.launcher.cpus_per_task, trainer.devices or trainer.num_nodes (sinfo -o '%D %c')",
    ),
)


def sbatch_refusal(stderr: str) -> UserError:
    """One line for what ``sbatch`` said when it refused a job: its message, option and fix."""
    errors = [
        line.split("error:", 1)[1].strip()
        for line in stderr.splitlines()
        if "error:" in line and "Batch job submission failed" not in line
    ] or [line.strip() for line in stderr.splitlines() if line.strip()][-1:]
    message = errors[0] if errors else "no reason given"
    for pattern, option, fix in REFUSALS:
        if re.search(pattern, message, re.IGNORECASE):
            return UserError(f"sbatch refused {option}: {message}: {fix}")
    return UserError(
        f"sbatch refused the job: {message}: check its #SBATCH lines with"
        " python -m mnist_lit.cluster <your overrides> and change the hydra.launcher.* key"
    )


def submission_error(err: Exception) -> UserError | None:
    """The one-line error for a failed submission (``sbatch`` refused the job, or there is no
    ``sbatch``); None for anything else, which is not the user's to fix."""
    if isinstance(err, FailedJobError) and "sbatch" in str(err):
        return sbatch_refusal(str(err))
    if isinstance(err, FileNotFoundError) and err.filename == "sbatch":
        return UserError(
            "sbatch not found: submit from a machine of the SLURM cluster (a login node);"
            " to see what would be submitted: python -m mnist_lit.cluster <your overrides>"
        )
    return None
