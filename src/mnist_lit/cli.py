"""The one wrapper every entry point runs in.

``run_entry_point`` checks the command line before Hydra starts (so a bad one makes no run
dir), runs the task under ``hydra.main``, and ends a ``UserError`` raised anywhere in it as one
``error: <message>`` line on stderr and the error's exit code (``errors.py``).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_lit.checkpoints import checkpoint_problem, dataset_of_config
from mnist_lit.config import CONFIG_DIR, check_command_line, validate
from mnist_lit.console import first_line
from mnist_lit.errors import UserError, reported_errors


def run_entry_point(
    config_name: str,
    task: Callable[[DictConfig], Any],
    argv: Sequence[str] | None = None,
    check: bool = True,
    check_task: Callable[[DictConfig], object] | None = None,
) -> None:
    """Run ``task`` on the config ``python <config_name>.py <argv>`` composes.

    ``check=False`` skips the checks before Hydra (a DDP rank whose rank 0 checked already);
    ``check_task`` is the task's own check of each job's config, run with them.
    Each job of a sweep checks its own config again inside Hydra, where it is resolved.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if check:
        with reported_errors():
            for cfg in check_command_line(config_name, argv):
                check_ckpt_path(cfg)
                if check_task is not None:
                    check_task(cfg)
    sys.argv = [sys.argv[0], *argv]

    @functools.wraps(task)
    def checked_task(cfg: DictConfig) -> Any:
        with reported_errors():
            validate(cfg)
            return task(cfg)

    main = hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=config_name)
    main(checked_task)()


def check_ckpt_path(cfg: DictConfig) -> None:
    """``ckpt_path`` must be a checkpoint this config can use: loadable, of its data set, and
    (when it trains a model) one training can resume from, with weights that fit the model."""
    path = cfg.get("ckpt_path")
    trains = "model" in cfg  # train.py resumes fitting; eval, predict, export load the model
    if path is None:
        return
    problem = checkpoint_problem(
        str(path),
        dataset=dataset_of_config(cfg.data) if "data" in cfg else None,
        resume=trains,
        net=OmegaConf.to_container(cfg.model, resolve=True) if trains else None,  # type: ignore[arg-type]
    )
    if problem is not None:
        # Lightning's own names (last, best...) look in this run's new, empty dir
        hint = "; to go on with a run: resume=<run dir> or resume=last" if trains else ""
        raise UserError(problem + hint)


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
