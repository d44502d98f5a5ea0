"""The one wrapper every entry point runs in.

``run_entry_point`` checks the command line before Hydra starts (so a bad one makes no run
dir), runs the task under ``hydra.main``, and ends a ``UserError`` raised anywhere in it as one
``error: <message>`` line on stderr and the error's exit code (``errors.py``). It imports
neither torch nor Lightning until a task runs (or a checkpoint must be read): ``--help``,
``--cfg`` and a refused command line answer at once. Until the task starts, Python's cycle
collector is paused (``collector_paused_until_task``): importing torch and Lightning is much
faster without it.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_lit.compat import hydra_argument_parser
from mnist_lit.config import (
    CONFIG_DIR,
    JOB_DIR_ENV,
    check_command_line,
    help_text,
    jobs,
    remove_unstarted_run_dir,
    validate,
)
from mnist_lit.console import first_line
from mnist_lit.errors import BAD_INPUT, UserError, reported_errors
from mnist_lit.files import checkpoint_file
from mnist_lit.schema import EXPORT_SUFFIXES


def run_entry_point(
    config_name: str,
    task: Callable[[DictConfig], Any] | str,
    argv: Sequence[str] | None = None,
    check: bool = True,
    check_task: Callable[[DictConfig], object] | None = None,
) -> None:
    """Run ``task`` on the config ``python <config_name>.py <argv>`` composes.

    ``task`` may be named as ``"module:function"``, imported only when a job runs.
    ``check=False`` skips the checks before Hydra (a DDP rank whose rank 0 checked already);
    ``check_task`` is the task's own check of each job's config, run with them.
    Each job of a sweep checks its own config again inside Hydra, where it is resolved.
    """
    with collector_paused_until_task():
        _run(config_name, task, list(sys.argv[1:] if argv is None else argv), check, check_task)


def _run(
    config_name: str,
    task: Callable[[DictConfig], Any] | str,
    argv: list[str],
    check: bool,
    check_task: Callable[[DictConfig], object] | None,
) -> None:
    """``run_entry_point``'s work, with the cycle collector paused."""
    args, _ = hydra_argument_parser().parse_known_args(argv)
    if args.help and not args.hydra_help:
        with reported_errors():
            overrides = (
                jobs(args.overrides)[0] if args.multirun else args.overrides
            )  # a sweep's first
            print(help_text(args.config_name or config_name, overrides))
        return
    if check:
        with reported_errors():
            for cfg in check_command_line(config_name, argv):
                check_ckpt_path(cfg)
                if check_task is not None:
                    check_task(cfg)
    sys.argv = [sys.argv[0], *argv]

    def checked_task(cfg: DictConfig) -> Any:
        with reported_errors():
            try:
                validate(cfg)
                function = _imported(task)
                start_collecting()
                return function(cfg)
            except UserError as err:
                if err.exit_code == BAD_INPUT:  # refused before it trained: no run to keep
                    remove_unstarted_run_dir(HydraConfig.get().runtime.output_dir)
                raise

    main = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    main(checked_task)()


@contextmanager
def collector_paused_until_task() -> Iterator[None]:
    """Python's cycle collector off while a command starts: its checks, Hydra's composes and the
    imports of torch and Lightning, until ``start_collecting`` (when the task begins).

    What starting makes (about half a million tracked objects once torch is in) lives as long as
    the process, and every full collection walks all of it: with the collector on, importing
    torch and Lightning ran seven of them, a fifth to a third of the import's time on 2 cores
    (docs/speed.md). A command that ends before its task (``--help``, a refused command line)
    just turns it back on.
    """
    if not gc.isenabled():  # a command run from inside another: the outer one decides
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def start_collecting() -> None:
    """Freeze what the command made while starting (``gc.freeze``: no collection walks it again,
    neither those during training nor the one at exit), and turn the collector back on for
    what comes next. Once per process: later jobs of a sweep find it on."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def _imported(task: Callable[[DictConfig], Any] | str) -> Callable[[DictConfig], Any]:
    if callable(task):
        return task
    module, _, function = task.partition(":")
    return getattr(importlib.import_module(module), function)


def check_ckpt_path(cfg: DictConfig) -> None:
    """``ckpt_path`` must be a checkpoint this config can use: loadable, of its data set, and
    (when it trains a model) one training can resume from, with weights that fit the model."""
    path = cfg.get("ckpt_path")
    trains = "model" in cfg  # train.py resumes fitting; eval, predict, export load the model
    if path is None:
        return
    onnx = Path(str(path)).suffix.lower() == EXPORT_SUFFIXES["onnx"]
    if onnx and cfg.get("task_name") in ONNX_TASKS:
        checkpoint_file(path)  # onnxruntime reads it when the task runs: no torch to load here
        return
    try:
        checkpoint_file(path)  # a wrong path, answered without loading torch
        from mnist_lit.checkpoints import checkpoint_problem, dataset_of_config

        problem = checkpoint_problem(
            str(path),
            dataset=dataset_of_config(cfg.data) if "data" in cfg else None,
            resume=trains,
            net=OmegaConf.to_container(cfg.model, resolve=True) if trains else None,  # type: ignore[arg-type]
        )
    except UserError as err:
        problem = str(err)
    if problem is not None:
        raise UserError(problem + (_RESUME_HINT if trains else ""))


#: the tasks that also run an exported ONNX file (``predictors.py``)
ONNX_TASKS = ("predict", "serve")

#: (Lightning's own names, ckpt_path=last or best, would look in this run's new, empty dir)
_RESUME_HINT = "; to go on with a run: resume=<run dir> or resume=last"


def ddp_rank_argv() -> list[str] | None:
    """For a DDP rank that Lightning started by re-running this script: the command line to use.

    Lightning re-runs rank 0's command line (for a multirun: the whole sweep, ``-m`` included)
    with ``hydra.run.dir`` set to the dir of a single run. Instead, such a rank composes the
    config that rank 0's job saved in ``<job dir>/.hydra`` and runs in that job's dir, with its
    own Hydra files and log in ``<job dir>/.pl_hydra_rank_<N>``. ``None`` for any other process.
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


@contextmanager
def built_from(key: str) -> Iterator[None]:
    """Turn a class's own refusal of its arguments into one line naming the config key.

    What a class checks when it is built (Lightning's Trainer, a callback, a network with no
    model in ``schema.py``) is not checked again before; this reports it as such a check would.
    """
    try:
        yield
    except UserError:
        raise
    except (InstantiationException, TypeError, ValueError, KeyError, OmegaConfBaseException) as err:
        cause = err.__cause__ if err.__cause__ is not None else err  # Hydra wraps the class's error
        reason = first_line(cause, skip="Error in call to target").rstrip(":.")
        raise UserError(
            f"{key}: {reason}: fix the value in conf/{key}/ or on the command line"
        ) from None
