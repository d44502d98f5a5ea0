"""Run dirs and ``resume=<run dir>|last``: go on with a stopped run in its own dir.

``python train.py resume=<run dir>`` becomes that run's own overrides (its
``.hydra/overrides.yaml``), then any given now, then ``hydra.run.dir=<run dir>`` and
``ckpt_path=<its newest intact checkpoint>``. What makes the resumed run exact is in
``callbacks.ExactResume``, the resumable batches of ``data.datamodule`` and
``checkpoints.AtomicCheckpointIO`` (docs/resume.md).

A SLURM job that was preempted and requeued (``processes.py``) runs its command line again; it
becomes ``resume=<the run dir that job trained in>`` (``requeued_command_line``).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import yaml

from mnist_lit.errors import UserError
from mnist_lit.files import atomic_write_bytes, unfinished_writes
from mnist_lit.slurm import SLURM_JOB_FILE, requeued, slurm_job_id

log = logging.getLogger(__name__)

#: where a resumed run's Hydra files go until its config is accepted (``accept_resumed_config``)
RESUME_SUBDIR = ".hydra/resume"


def newest_intact_checkpoint(run_dir: Path) -> Path:
    """The most recently written checkpoint of a run that loads; damaged ones are skipped."""
    from mnist_lit.checkpoints import checkpoint_problem  # torch: only once there is a run

    found = sorted(
        (run_dir / "checkpoints").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for path in found:
        problem = checkpoint_problem(path, resume=True)
        if problem is None:
            return path
        log.warning("not resuming from %s: %s; trying the one before", path, problem)
    if found:
        raise UserError(f"no checkpoint in {run_dir / 'checkpoints'} loads: start a new run")
    raise UserError(
        f"{run_dir} has no checkpoint to resume from (it stopped before its first one): "
        "start a new run"
    )


def remove_unfinished_writes(run_dir: Path) -> None:
    """Delete the temporary files of checkpoint writes that were killed (``files.atomic_write``).

    A run dir has one writer at a time, and a run being resumed is not running: any such file
    is a leftover.
    """
    for leftover in unfinished_writes(run_dir / "checkpoints"):
        log.info("removing %s, left by a checkpoint write that was killed", leftover)
        leftover.unlink(missing_ok=True)


def run_dirs(logs: Path) -> list[Path]:
    """The runs under ``logs`` (``logs/train``), single runs (``runs/<time>``) and sweep jobs
    (``multiruns/<time>/<job>``), the one started or resumed last first."""
    found = [
        *logs.glob("runs/*/.hydra/overrides.yaml"),
        *logs.glob("multiruns/*/*/.hydra/overrides.yaml"),
    ]
    return [p.parent.parent for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def latest_run_dir(logs: Path) -> Path:
    """For ``resume=last``: the run started or resumed last under ``logs`` (``run_dirs``)."""
    runs = run_dirs(logs)
    if not runs:
        raise UserError(f"resume=last found no run under {logs}: pass resume=<run dir>")
    return runs[0]


def override_key(override: str) -> str:
    """The key an override sets: ``model.dropout`` of ``+model.dropout=0.5``."""
    return override.split("=", 1)[0].lstrip("+~")


def requeued_command_line(argv: Sequence[str], logs: Path) -> list[str]:
    """For a SLURM job that was requeued (``SLURM_RESTART_COUNT`` > 0): ``resume=<its run>``.

    Its run is the dir named by ``hydra.run.dir=`` if the command pins one, else the run under
    ``logs`` (``paths.log_dir=`` if given) that records this job's id. One that has no checkpoint
    yet, or none found, starts over: the command line is returned as it is.
    """
    if not requeued():
        return list(argv)
    if any(override_key(a) == "resume" for a in argv) or "-m" in argv or "--multirun" in argv:
        return list(argv)
    job = slurm_job_id()
    given = {override_key(a): a.split("=", 1)[1] for a in argv if "=" in a}
    if "paths.log_dir" in given:
        logs = Path(given["paths.log_dir"]) / logs.name
    pinned = [Path(given["hydra.run.dir"])] if "hydra.run.dir" in given else []
    for run_dir in [*pinned, *run_dirs(logs)]:
        record = run_dir / SLURM_JOB_FILE
        if record.is_file() and record.read_text().strip() == job:
            if not any((run_dir / "checkpoints").rglob("*.ckpt")):
                break
            log.info("SLURM job %s was requeued: resuming its run %s", job, run_dir)
            rest = [a for a in argv if override_key(a) != "hydra.run.dir"]
            return resume_command_line([*rest, f"resume={run_dir}"], logs)
    return list(argv)


def requeued_checkpoint(run_dir: Path) -> str | None:
    """For a SLURM job requeued into ``run_dir`` (a sweep job, which submitit runs again without
    a command line): the checkpoint to resume from, if this job saved one there."""
    record = run_dir / SLURM_JOB_FILE
    if not requeued() or not record.is_file() or record.read_text().strip() != slurm_job_id():
        return None
    remove_unfinished_writes(run_dir)
    if not any((run_dir / "checkpoints").rglob("*.ckpt")):
        return None
    log.info("SLURM job %s was requeued: resuming in %s", slurm_job_id(), run_dir)
    return str(newest_intact_checkpoint(run_dir))


def resume_command_line(argv: Sequence[str], logs: Path) -> list[str]:
    """Rewrite ``resume=<dir> [overrides]`` into the original run's overrides, pinned to its dir.

    The original run's own overrides (``<dir>/.hydra/overrides.yaml``) come first, then any
    given here (e.g. a higher ``trainer.max_epochs``), then ``hydra.run.dir=<dir>`` and
    ``ckpt_path=<its newest intact checkpoint>``. Other arguments pass through unchanged.
    """
    given = [a for a in argv if override_key(a) == "resume"]
    if not given:
        return requeued_command_line(argv, logs)
    if "-m" in argv or "--multirun" in argv:
        raise UserError("resume= resumes one run: resume each job of a sweep by its dir")
    where = given[-1].split("=", 1)[1]
    run_dir = latest_run_dir(logs) if where == "last" else Path(where).expanduser()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise UserError(
            f"resume={where}: {run_dir} is not a run dir (no .hydra/overrides.yaml): pass "
            "resume=logs/train/runs/<time> or resume=logs/train/multiruns/<time>/<job>"
        )
    original = yaml.safe_load(overrides_file.read_text()) or []
    extra = [a for a in argv if override_key(a) != "resume"]
    replaced = {override_key(a) for a in extra if "=" in a} | {"ckpt_path", "hydra.run.dir"}
    kept = [o for o in original if override_key(o) not in replaced]
    remove_unfinished_writes(run_dir)
    checkpoint = newest_intact_checkpoint(run_dir)
    return [
        *kept,
        *extra,
        f"hydra.run.dir={run_dir.resolve()}",
        f"hydra.output_subdir={RESUME_SUBDIR}",
        f"ckpt_path={checkpoint.resolve()}",
    ]


def accept_resumed_config(run_dir: Path) -> None:
    """Make a resumed run's Hydra files the run's own, once its config has been accepted.

    A resume writes them to ``.hydra/resume/`` (``resume_command_line``), so one that is refused
    (a value Lightning rejects when the trainer is built) leaves the run's ``.hydra/`` as it was
    and the next ``resume=`` starts from the overrides that worked. Call it before fitting.
    """
    attempt = run_dir / RESUME_SUBDIR
    if not attempt.is_dir():
        return
    for written in attempt.glob("*.yaml"):
        atomic_write_bytes(run_dir / ".hydra" / written.name, written.read_bytes())
    shutil.rmtree(attempt)
