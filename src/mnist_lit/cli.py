"""The command line before Hydra reads it, and Hydra's refusals of it said in one line.

``python train.py resume=<run dir>`` becomes that run's own overrides (its
``.hydra/overrides.yaml``), then any given now, then ``hydra.run.dir=<run dir>`` and
``ckpt_path=<its newest intact checkpoint>`` (docs/resume.md). A DDP rank that Lightning starts
by re-running ``train.py`` joins its rank 0's job dir, and a requeued SLURM job resumes the run
it trained in. Nothing here imports torch until a run is resumed.
"""

from __future__ import annotations

import difflib
import itertools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from mnist_lit.config import CONFIG_DIR, PROJECT_ROOT, check
from mnist_lit.errors import UserError, atomic_write_bytes, unfinished_writes

log = logging.getLogger(__name__)

#: where a resumed run's Hydra files go until it is accepted (``accept_resumed_config``)
RESUME_SUBDIR = ".hydra/resume"
#: tells a DDP rank that Lightning started by re-running train.py which job dir it joins
JOB_DIR_ENV = "MNIST_LIT_DDP_JOB_DIR"
#: in a run dir: the SLURM job that trains in it (a requeued job finds its run by it)
SLURM_JOB_FILE = "slurm_job_id"


def train_command_line(
    argv: Sequence[str], logs: Path = PROJECT_ROOT / "logs" / "train"
) -> list[str]:
    """``argv`` as train.py runs it: for a DDP rank, its job's; ``resume=`` rewritten."""
    if (rank_argv := ddp_rank_argv()) is not None:
        return rank_argv
    if not any(override_key(a) == "resume" for a in argv):
        return requeued_command_line(argv, logs)
    return resume_command_line(argv, logs)


def override_key(override: str) -> str:
    """The key an override sets: ``model.dropout`` of ``+model.dropout=0.5``."""
    return override.split("=", 1)[0].lstrip("+~")


def run_dirs(logs: Path) -> list[Path]:
    """The runs under ``logs`` (single runs and sweep jobs), the one started or resumed last
    first."""
    found = [
        *logs.glob("runs/*/.hydra/overrides.yaml"),
        *logs.glob("multiruns/*/*/.hydra/overrides.yaml"),
    ]
    return [p.parent.parent for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def resume_command_line(argv: Sequence[str], logs: Path) -> list[str]:
    """Rewrite ``resume=<dir>|last [overrides]`` into the run's overrides, pinned to its dir."""
    if "-m" in argv or "--multirun" in argv:
        raise UserError("resume= resumes one run: resume each job of a sweep by its dir")
    where = [a for a in argv if override_key(a) == "resume"][-1].split("=", 1)[1]
    if where == "last":
        runs = run_dirs(logs)
        if not runs:
            raise UserError(f"resume=last found no run under {logs}: pass resume=<run dir>")
        run_dir = runs[0]
    else:
        run_dir = Path(where).expanduser()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise UserError(
            f"resume={where}: {run_dir} is not a run dir (no .hydra/overrides.yaml): pass "
            "resume=logs/train/runs/<time> or resume=logs/train/multiruns/<time>/<job>"
        )
    original = yaml.safe_load(overrides_file.read_text()) or []
    if not isinstance(original, list) or not all(isinstance(o, str) for o in original):
        raise UserError(
            f"resume={where}: {overrides_file} is not a list of overrides: start a new run"
        )
    for override in original:  # a run dir is data: replay only what a user types for train.py
        key, _, value = override.partition("=")
        if key.lstrip("+~").startswith("hydra") or "_target_" in override or "${" in value:
            raise UserError(
                f"resume={where}: its .hydra/overrides.yaml holds {override!r}, which a resume "
                "does not replay (Hydra's own keys, _target_ and interpolations can run code): "
                "start a new run with the overrides you want"
            )
    extra = [a for a in argv if override_key(a) != "resume"]
    replaced = {override_key(a) for a in extra if "=" in a} | {"ckpt_path", "hydra.run.dir"}
    kept = [o for o in original if override_key(o) not in replaced]
    for leftover in unfinished_writes(run_dir / "checkpoints"):  # a write killed mid-way
        leftover.unlink(missing_ok=True)
    checkpoint = newest_intact_checkpoint(run_dir)
    return [
        *kept,
        *extra,
        f"hydra.run.dir={run_dir.resolve()}",
        f"hydra.output_subdir={RESUME_SUBDIR}",
        f"ckpt_path={checkpoint.resolve()}",
    ]


def newest_intact_checkpoint(run_dir: Path) -> Path:
    """The most recently written checkpoint of a run that loads; damaged ones are skipped."""
    from mnist_lit.checkpoints import checkpoint_problem  # torch: only once there is a run

    found = sorted((run_dir / "checkpoints").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    for path in reversed(found):
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


def best_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a run's test used (``best_ckpt`` in its ``metrics.json``), looked up by
    name in this run dir's ``checkpoints/``: the path saved there is absolute, so a copied run dir
    still names the original's file, and a moved one a file that is gone."""
    try:
        best = json.loads((run_dir / "metrics.json").read_text()).get("best_ckpt")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(best, str) or not best:
        return None
    path = run_dir / "checkpoints" / Path(best).name
    return path if path.is_file() else None


def accept_resumed_config(run_dir: Path) -> None:
    """Make a resumed run's Hydra files the run's own, once it is accepted (before fitting).

    A refused resume leaves ``.hydra/`` as it was, so the next ``resume=`` starts from the
    overrides that worked.
    """
    attempt = run_dir / RESUME_SUBDIR
    for written in sorted(attempt.glob("*.yaml")):
        atomic_write_bytes(run_dir / ".hydra" / written.name, written.read_bytes())
        written.unlink()
    if attempt.is_dir():
        attempt.rmdir()


def ddp_rank_argv() -> list[str] | None:
    """For a DDP rank that Lightning started by re-running this script: its command line.

    Lightning re-runs rank 0's command line (a whole sweep, for a multirun); such a rank instead
    composes the config rank 0's job saved and runs in that job's dir. ``None`` otherwise.
    """
    job_dir = os.environ.get(JOB_DIR_ENV)
    local_rank = os.environ.get("LOCAL_RANK", "0")
    if not job_dir or local_rank == "0":
        return None
    rank_dir = Path(job_dir) / f".pl_hydra_rank_{local_rank}"
    rank_dir.mkdir(parents=True, exist_ok=True)  # Hydra opens the log before it makes this dir
    return [
        f"--config-path={Path(job_dir) / '.hydra'}",
        "--config-name=config",
        f'hydra.run.dir="{job_dir}"',
        f"hydra.output_subdir={rank_dir.name}",
        f'hydra.job_logging.handlers.file.filename="{rank_dir / "train.log"}"',
    ]


# ----------------------------------------------------------------------------- SLURM requeue


def slurm_job_id() -> str | None:
    """This SLURM job's id as ``scontrol`` names it (``<array job>_<task>``), or ``None``."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID") or None


def requeued_in(run_dir: Path) -> bool:
    """Whether this is a SLURM job run again after a requeue, in the run it trained in."""
    record, restarts = run_dir / SLURM_JOB_FILE, os.environ.get("SLURM_RESTART_COUNT", "0")
    if slurm_job_id() is None or not restarts.isdigit() or int(restarts) == 0:
        return False
    return record.is_file() and record.read_text().strip() == slurm_job_id()


def requeued_checkpoint(run_dir: Path) -> str | None:
    """For a SLURM job requeued into ``run_dir`` (a sweep job, run again without its command
    line): the checkpoint to resume from, if it saved one there."""
    if not requeued_in(run_dir) or not any((run_dir / "checkpoints").rglob("*.ckpt")):
        return None
    return str(newest_intact_checkpoint(run_dir))


def requeued_command_line(argv: Sequence[str], logs: Path) -> list[str]:
    """A requeued SLURM job that pins its run dir, or whose run records its id: ``resume=``."""
    if os.environ.get("SLURM_RESTART_COUNT", "0") in ("", "0") or "-m" in argv:
        return list(argv)
    given = {override_key(a): a.split("=", 1)[1] for a in argv if "=" in a}
    if "paths.log_dir" in given:
        logs = Path(given["paths.log_dir"]) / logs.name
    pinned = [Path(given["hydra.run.dir"])] if "hydra.run.dir" in given else []
    for run_dir in [*pinned, *run_dirs(logs)]:
        if requeued_in(run_dir) and any((run_dir / "checkpoints").rglob("*.ckpt")):
            log.info("SLURM job %s was requeued: resuming its run %s", slurm_job_id(), run_dir)
            rest = [a for a in argv if override_key(a) != "hydra.run.dir"]
            return resume_command_line([*rest, f"resume={run_dir}"], logs)
    return list(argv)


# ----------------------------------------------------------------------------- sweeps


def sweep_jobs(overrides: Sequence[str], limit: int = 100) -> list[list[str]]:
    """The override lists of a sweep's jobs (``model=mlp,cnn`` -> two), the first ``limit``.
    An interval (an Optuna search space) has no value to try: its sweeper checks it."""
    choices: list[list[str]] = []
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not override.is_sweep_override():
            choices.append([str(override.input_line)])
        elif override.is_discrete_sweep() and "GLOB" not in str(override.value_type):
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
    return [list(job) for job in itertools.islice(itertools.product(*choices), limit)] or [[]]


def check_sweep(config_name: str, argv: Sequence[str]) -> None:
    """For ``-m``: every job of the sweep composed and checked before the first one runs, so a
    bad value in the last job is refused before the first one trains."""
    if "-m" not in argv and "--multirun" not in argv:
        return
    overrides = [a for a in argv if not a.startswith("-")]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name=config_name):
        for job in sweep_jobs(overrides):
            check(compose(config_name, overrides=job))


# ----------------------------------------------------------------------------- Hydra's refusals


@contextmanager
def hydra_refusals(config_name: str, argv: Sequence[str]) -> Iterator[None]:
    """Hydra's and OmegaConf's refusals of a command line as one ``UserError`` line.

    They reach here because the entry points set ``HYDRA_FULL_ERROR``: Hydra then raises them
    instead of printing them with a note about stack traces.
    """
    for override in argv:  # an empty one would run in the current folder
        key, _, value = override.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and not value.strip():
            raise UserError(f"{key} is empty: pass a folder for the run, or leave it out")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and "${" not in value:
            try:
                Path(value.strip("'\"")).mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise UserError(f"{key}={value}: cannot make it ({err.strerror})") from None
    try:
        yield
    except MissingConfigException as err:
        where, _, name = (err.missing_cfg_file or "").rpartition("/")
        options = ", ".join(sorted(err.options or []))
        raise UserError(
            f"'{name}' is not an option of '{where or 'config'}': choose one of {options}"
        ) from None
    except ConfigCompositionException as err:
        raise UserError(_composition_error(config_name, list(argv), err)) from None
    except OverrideParseException as err:
        raise UserError(
            f"cannot parse the override '{err.override}': {err.message.splitlines()[0]}"
        ) from None
    except OmegaConfBaseException as err:
        raise UserError(" ".join(str(err).split("\n")[:1])) from None
    except ValueError:  # Hydra's for a group set to null
        groups = [o.split("=")[0] for o in argv if o.endswith("=null")]
        groups = [g for g in groups if (CONFIG_DIR / g).is_dir()]
        if not groups:
            raise
        options = ", ".join(sorted(p.stem for p in (CONFIG_DIR / groups[0]).glob("*.yaml")))
        raise UserError(f"{groups[0]}=null: choose one of {options}") from None


def _composition_error(config_name: str, argv: list[str], err: Exception) -> str:
    """An override of a key the config lacks gets a close spelling; others, Hydra's first line."""
    cause = err.__cause__
    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        text = str(err).splitlines()[0]
        return text + (
            f" ({str(cause).splitlines()[0]})" if cause is not None and str(cause) else ""
        )
    first = str(err).splitlines()[0]  # "Could not override 'model.dropuot'."
    key = first.split("'")[1] if first.count("'") >= 2 else str(cause.full_key)
    parent, _, name = key.rpartition(".")
    known: list[str] = []
    try:
        others = [a for a in argv if "=" in a and override_key(a) != key]
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            composed = compose(config_name, overrides=others)
        siblings = OmegaConf.select(composed, parent) if parent else composed
        known = [str(k) for k in siblings] if isinstance(siblings, DictConfig) else []
    except Exception:  # another error in the rest: the line still names the key
        pass
    close = difflib.get_close_matches(name, known, n=1)
    hint = (
        f"did you mean '{parent + '.' if parent else ''}{close[0]}'? "
        if close
        else "check its spelling "
    )
    return (
        f"unknown config key '{key}': {hint}(`python {config_name}.py --cfg job` lists the "
        f"keys), or add a new key with '+{key}=...'"
    )
