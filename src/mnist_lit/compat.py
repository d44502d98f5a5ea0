"""Every private library API the extras use, in one place: what it is for and why no public API
does the job. The core uses none. A library upgrade that breaks one breaks it here, and
``tests/unit/test_compat.py`` says which.

Checked with hydra-core 1.3.2, hydra-submitit-launcher 1.2.0, submitit 1.5, wandb 0.29.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any


def hydra_multirun_internals() -> tuple[Any, Any]:
    """Hydra's ``Callbacks`` and ``BasicSweeper`` classes, for the SLURM dry run.

    Why: the dry run (``mnist_lit.cluster``) composes a multirun's config and splits its jobs
    exactly as ``Hydra.multirun`` does, without launching; Hydra exposes neither piece.
    """
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return Callbacks, BasicSweeper


def slurm_executor_without_srun(make_executor: Any) -> Any:
    """Build a submitit SLURM executor on a machine without SLURM.

    Why: ``SlurmExecutor`` asks ``srun`` for the CPU affinity when it is built (a check that
    matters for submitting only); the dry run renders the sbatch script and submits nothing.
    """
    from submitit.slurm.slurm import SlurmExecutor

    original = SlurmExecutor.__dict__["affinity"]
    SlurmExecutor.affinity = classmethod(lambda cls: 2)  # type: ignore[assignment]
    try:
        return make_executor()
    finally:
        SlurmExecutor.affinity = original  # type: ignore[method-assign]


def sbatch_script_text(executor: Any, n_jobs: int) -> str:
    """The sbatch script submitit would write for ``n_jobs`` jobs (an array job when > 1).

    Why: submitit renders it only while submitting; these are the calls its
    ``_internal_process_submissions`` makes for an array.
    """
    slurm = executor._executor
    parameters = dict(slurm.parameters)
    if n_jobs > 1:
        slurm.parameters["map_count"] = n_jobs
    try:
        return str(slurm._make_submission_file_text(slurm._submitit_command_str, uid="dry-run"))
    finally:
        slurm.parameters = parameters


def submitit_command(executor: Any) -> str:
    """The command each SLURM task runs (submitit's private ``_submitit_command_str``)."""
    return str(executor._executor._submitit_command_str)


def wandb_history_rows(path: Path) -> Iterator[dict[str, str]]:
    """The history rows (metric name -> JSON value) of one W&B run file, ``run-<id>.wandb``.

    Why: a resumed run must not log a step twice, and only the run's own file says which steps W&B
    holds (its service writes in blocks: a run killed with SIGKILL holds less than it logged).
    W&B reads these files with ``wandb.sdk.internal.datastore`` (``wandb sync`` does), an internal
    module with no public equivalent; it exists up to wandb 0.29 (pinned ``<0.30``).
    """
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    store = datastore.DataStore()
    store.open_for_scan(str(path))
    while True:
        try:
            data = store.scan_data()
        except AssertionError:  # a block cut short by the kill: the rest is not there
            return
        if data is None:
            return
        record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]  # generated protobuf
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            yield {
                item.key or "/".join(item.nested_key): item.value_json
                for item in record.history.item
            }
