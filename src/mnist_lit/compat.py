"""Every private library API the project uses, in one place: what it is for and why no public
API does the job. Each was checked against the versions named; a library upgrade that breaks
one breaks it here, and ``tests/unit/test_compat.py`` says which.

Checked with hydra-core 1.3.2, hydra-submitit-launcher 1.2.0, submitit 1.5, lightning 2.6,
torch 2.14, wandb 0.29, numpy 2.x (and 1.26 for the numpy fallback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def hydra_argument_parser() -> argparse.ArgumentParser:
    """Hydra's own command-line grammar (``--help``, ``--cfg``, ``-m``, overrides...).

    Why: the command line is checked before ``hydra.main`` runs (so a bad one makes no run dir),
    and only this parser splits it exactly as Hydra will. Hydra has no public equivalent.
    """
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def cpu_has_native_bf16(torch_cpu: Any) -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX (Intel Cooper Lake+, AMD Zen 4+).

    Why: torch tells only through these private helpers of ``torch.cpu`` (passed in, so that
    this module imports no torch); an absent one means no.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch_cpu, name, lambda: False)() for name in checks)


def numpy_array_reconstructor() -> Any:
    """numpy's ``_reconstruct``, the one function a pickled ndarray calls to rebuild itself.

    Why: the safe unpickler of the MNIST wheel (``data/offline.py``) allows exactly the globals a
    pickled array needs, and this is one of them; it moved to ``numpy._core`` in numpy 2.
    """
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct


def started_rank_processes(trainer: Any) -> list[Any]:
    """The DDP rank processes Lightning started from this process (``Popen`` objects).

    Why: a multirun runs several jobs in one process; the next job must not start before this
    job's ranks have ended. Lightning keeps them in its (private) subprocess launcher's ``procs``
    and offers no way to wait for them. The list is returned as the launcher holds it.
    """
    procs = getattr(getattr(trainer.strategy, "launcher", None), "procs", None)
    return procs if isinstance(procs, list) else []


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


def call_callback_hook(trainer: Any, hook: str, *args: Any) -> None:
    """Call ``hook`` on every callback of ``trainer``, as Lightning's loops do.

    Lightning's private ``trainer.call._call_callback_hooks`` is the one function its loops call
    a callback hook through (the profiler's context and the hook's name on each callback);
    ``benchmarks/callback_cost.py`` times it to say what a callback costs a step just by being in
    the list. No public API calls a hook on the callbacks.
    """
    # a trainer exists, so Lightning is loaded: its module is read, not imported (compat is
    # imported by the torch-free config checks)
    call = sys.modules["lightning.pytorch.trainer.call"]
    call._call_callback_hooks(trainer, hook, *args)


def skip_callback_hook(callback: Any, hook: str) -> None:
    """Lightning no longer calls ``hook`` on ``callback`` (for the hooks it leaves empty).

    Why: Lightning calls every hook of every callback in the list, once per batch for the batch
    hooks, whether the callback defines it or keeps ``Callback``'s empty one; each call has its
    profiler context and the callback's ``state_key``, a visible share of a small network's step
    (docs/speed.md). Its one hook loop (private ``trainer.call._call_callback_hooks``) passes over
    a hook that is not callable, and no public API says which hooks a callback wants.
    ``tests/unit/test_compat.py`` checks that it still does.
    """
    setattr(callback, hook, None)


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
