"""Run dirs and ``resume=<run dir>|last``: go on with a stopped run in its own dir.

``python train.py resume=<run dir>`` becomes that run's own overrides (its
``.hydra/overrides.yaml``), then any given now, then ``hydra.run.dir=<run dir>`` and
``ckpt_path=<its newest intact checkpoint>``. What makes the resumed run exact is in
``callbacks.ExactResume``, the resumable batches of ``data.datamodule`` and
``checkpoints.AtomicCheckpointIO`` (docs/resume.md).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import yaml

from mnist_lit.checkpoints import checkpoint_problem
from mnist_lit.errors import UserError

log = logging.getLogger(__name__)


def newest_intact_checkpoint(run_dir: Path) -> Path:
    """The most recently written checkpoint of a run that loads; damaged ones are skipped."""
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


def latest_run_dir(runs_root: Path) -> Path:
    """The newest single-run dir (``logs/train/runs/<time>``), for ``resume=last``."""
    runs = sorted(p for p in runs_root.glob("*") if (p / ".hydra" / "overrides.yaml").is_file())
    if not runs:
        raise UserError(f"resume=last found no run under {runs_root}: pass resume=<run dir>")
    return runs[-1]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_command_line(argv: Sequence[str], runs_root: Path) -> list[str]:
    """Rewrite ``resume=<dir> [overrides]`` into the original run's overrides, pinned to its dir.

    The original run's own overrides (``<dir>/.hydra/overrides.yaml``) come first, then any
    given here (e.g. a higher ``trainer.max_epochs``), then ``hydra.run.dir=<dir>`` and
    ``ckpt_path=<its newest intact checkpoint>``. Other arguments pass through unchanged.
    """
    given = [a for a in argv if _key(a) == "resume"]
    if not given:
        return list(argv)
    if "-m" in argv or "--multirun" in argv:
        raise UserError("resume= resumes one run: resume each job of a sweep by its dir")
    where = given[-1].split("=", 1)[1]
    run_dir = latest_run_dir(runs_root) if where == "last" else Path(where).expanduser()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise UserError(
            f"resume={where}: {run_dir} is not a run dir (no .hydra/overrides.yaml): pass "
            "resume=logs/train/runs/<time> or resume=logs/train/multiruns/<time>/<job>"
        )
    original = yaml.safe_load(overrides_file.read_text()) or []
    extra = [a for a in argv if _key(a) != "resume"]
    replaced = {_key(a) for a in extra if "=" in a} | {"ckpt_path", "hydra.run.dir"}
    kept = [o for o in original if _key(o) not in replaced]
    checkpoint = newest_intact_checkpoint(run_dir)
    return [
        *kept,
        *extra,
        f"hydra.run.dir={run_dir.resolve()}",
        f"ckpt_path={checkpoint.resolve()}",
    ]
