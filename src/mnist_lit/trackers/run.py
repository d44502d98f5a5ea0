"""What a tracker logger knows of its run, found from its own arguments and Hydra's runtime.

The core builds every logger with a plain ``instantiate(logger_cfg)``, so a tracker gets the
run dir, the log dir, the run's tags and the checkpoint it resumes from through interpolations
in its YAML (``${paths.output_dir}``, ``${paths.log_dir}``, ``${tags}``, ``${ckpt_path}``); the
rest comes from Hydra: a sweep's job is named after its sweep dir and number, and the composed
config is the one Hydra saved in the run dir before the task ran.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mnist_lit.config import check
from mnist_lit.errors import UserError, atomic_write_bytes
from mnist_lit.schema import Options
from mnist_lit.train import RESULTS_FILE, checkpoint_step

#: the ids of this run's tracker runs (MLflow's run id, W&B's run id and group), by tracker
TRACKERS_FILE = "trackers.json"


@dataclass(frozen=True)
class TrackedRun:
    """What the trackers record about the run beside its metrics."""

    run_dir: Path
    #: where the run is: its dir relative to ``paths.log_dir`` (``train/runs/<time>``), a
    #: sweep's job ``<sweep name>/<job number>`` (``run_name``)
    name: str
    #: the sweep dir of a multirun's job (None for a single run, or a resumed job: its tracker
    #: runs already belong to their sweep)
    sweep_dir: Path | None = None
    #: the sweep dir's name by the same rule (``train/multiruns/<time>``)
    sweep_name: str | None = None
    tags: tuple[str, ...] = ()
    #: the step the run resumes at (None: a fresh run)
    resumed_at: int | None = None
    #: the composed config, flat (``model.dropout -> 0.25``)
    config: dict[str, Any] = field(default_factory=dict)
    #: the ``metrics.json`` there was when the logger was built (a finished run resumed again)
    results_before: tuple[int, int] | None = None

    def saved_ids(self, tracker: str) -> dict[str, Any]:
        """The ids ``remember_ids`` kept for ``tracker``: empty for a fresh run."""
        path = self.run_dir / TRACKERS_FILE
        if self.resumed_at is None or not path.is_file():
            return {}
        return dict(json.loads(path.read_text()).get(tracker, {}))

    def remember_ids(self, tracker: str, ids: dict[str, Any]) -> None:
        path = self.run_dir / TRACKERS_FILE
        saved = json.loads(path.read_text()) if path.is_file() else {}
        saved[tracker] = ids
        atomic_write_bytes(path, json.dumps(saved, indent=2).encode())

    def new_results(self) -> dict[str, Any] | None:
        """This run's ``metrics.json`` once the core wrote it at the run's end, else ``None``.

        Lightning finalizes the loggers after fit and after test too; only the run's last
        finalize comes after the results, and a file from before this run is not its results.
        """
        path = self.run_dir / RESULTS_FILE
        if not path.is_file() or _stamp(path) == self.results_before:
            return None
        return dict(json.loads(path.read_text()))


def _stamp(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path``: the core replaces ``metrics.json`` whole (a new inode)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def tracked_run(
    run_dir: str | Path,
    tags: str | Iterable[str] | None,
    ckpt_path: str | None,
    log_dir: str | Path | None = None,
) -> TrackedRun:
    """The ``TrackedRun`` of the job that is running (Hydra's runtime says if it is a sweep's);
    ``log_dir``: ``paths.log_dir``, what its name is relative to."""
    run_dir = Path(run_dir)
    name, sweep_dir, sweep_name = run_name(run_dir, log_dir), None, None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep_dir = Path(HydraConfig.get().sweep.dir)
        sweep_name = run_name(sweep_dir, log_dir)
        name = f"{sweep_name}/{HydraConfig.get().job.num}"
    return TrackedRun(
        run_dir=run_dir,
        name=name,
        sweep_dir=sweep_dir,
        sweep_name=sweep_name,
        tags=tuple(tag_list(tags)),
        resumed_at=checkpoint_step(ckpt_path) if ckpt_path else None,
        config=flat_params(composed_config(run_dir)),
        results_before=_stamp(run_dir / RESULTS_FILE),
    )


def run_name(path: Path, log_dir: str | Path | None) -> str:
    """Where a run (or sweep) dir is, as its trackers name it: relative to ``log_dir``
    (``train/runs/<time>``, ``x/kill``), else the whole path (a dir outside the log dir)."""
    path = path.resolve()
    if log_dir is not None and path.is_relative_to(Path(log_dir).resolve()):
        inside = path.relative_to(Path(log_dir).resolve()).as_posix()
        if inside != ".":  # the log dir itself: its path
            return inside
    return str(path)


def tag_list(tags: str | Iterable[str] | None) -> list[str]:
    """``tags=[a,b]`` or ``tags=a`` as a list."""
    if not tags:
        return []
    return [tags] if isinstance(tags, str) else [str(tag) for tag in tags]


def composed_config(run_dir: Path) -> dict[str, Any]:
    """The job's composed config (without ``hydra``), resolved where it can be.

    Hydra saves it in ``<run dir>/<hydra.output_subdir>/config.yaml`` before the task runs (a
    resumed run's in ``.hydra/resume/`` until the core accepts it).
    """
    subdir = HydraConfig.get().output_subdir if HydraConfig.initialized() else None
    candidates = [run_dir / subdir / "config.yaml"] if subdir else []
    path = next((p for p in [*candidates, run_dir / ".hydra" / "config.yaml"] if p.is_file()), None)
    if path is None:
        return {}
    loaded = OmegaConf.load(path)
    try:
        return dict(OmegaConf.to_container(loaded, resolve=True))  # type: ignore[arg-type]
    except OmegaConfBaseException:  # outside the job (``${hydra:...}``): as written
        return dict(OmegaConf.to_container(loaded, resolve=False))  # type: ignore[arg-type]


def flat_params(node: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"model": {"dropout": 0.25}}`` -> ``{"model.dropout": 0.25}``; lists stay whole."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, name, sep))
        else:
            flat[name] = value
    return flat


def check_arguments(key: str, model: type[Options], arguments: Mapping[str, Any]) -> None:
    """A ``UserError`` naming ``key`` for the first argument ``model`` refuses.

    The core's ``config.check`` knows only the core's classes; a tracker checks its own
    arguments when it is built, before anything is trained or opened.
    """
    try:
        check(OmegaConf.create(dict(arguments)), options=model)
    except UserError as err:
        raise UserError(f"{key}.{err}") from None


def not_logged_yet(
    metrics: Mapping[str, float], step: int | None, logged: Mapping[str, int]
) -> dict[str, float]:
    """On resume: the metrics of ``step`` that the stopped run did not log (the same values,
    since the resumed run repeats its steps exactly)."""
    if step is None:
        return dict(metrics)
    return {k: v for k, v in metrics.items() if step > logged.get(k, -1)}
