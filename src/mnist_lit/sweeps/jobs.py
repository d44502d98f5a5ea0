"""The jobs of a sweep, read from their folders: each job's overrides and final metrics.

A job is a numbered folder of the sweep dir, as Hydra's multirun makes it: its
``.hydra/overrides.yaml`` and, once it finished, the ``metrics.json`` train.py writes. For an
Optuna study the jobs of every sweep dir of the study are read (``studies.py``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from omegaconf import OmegaConf

#: what train.py writes into each run dir when it finishes (``mnist_lit.train.RESULTS_FILE``,
#: named here so that a report loads no torch)
RUN_SUMMARY_FILE = "metrics.json"

#: overrides that do not change what is trained (paths, display) or that repeat it (seed)
_NOT_A_SETTING = (
    "seed",
    "paths.",
    "hydra.",
    "callbacks.progress_bar",
    "trainer.enable_progress_bar",
)


@dataclass
class Job:
    """One job of a sweep: its overrides and, when it finished, its final metrics."""

    number: int
    overrides: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    epochs: int | None = None
    fit_seconds: float | None = None
    #: why an unfinished job did not finish, when known
    status: str = "did not finish"

    @property
    def finished(self) -> bool:
        return bool(self.metrics)

    @cached_property
    def settings(self) -> dict[str, str]:
        """``key -> value`` of the overrides that define the trained config (seed excluded)."""
        pairs = (o.lstrip("+~").split("=", 1) for o in self.overrides if "=" in o)
        return {k: _canonical(v) for k, v in pairs if not k.startswith(_NOT_A_SETTING)}

    def config(self, keys: set[str] | None = None) -> str:
        """The settings as ``k=v ...``, only ``keys`` if given (those that vary in a sweep)."""
        shown = sorted((k, v) for k, v in self.settings.items() if keys is None or k in keys)
        return " ".join(f"{k}={rounded(v)}" for k, v in shown) or "(defaults)"

    def percent(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return None if value is None else 100.0 * value

    @property
    def gap(self) -> float | None:
        """Train minus val accuracy at the last epoch, in points: how much the model overfits.

        Train accuracy is the one logged while training (dropout active), as in every log."""
        train, val = self.percent("train/acc"), self.percent("val/acc")
        return None if train is None or val is None else train - val


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every numbered job dir of a sweep; a job without ``metrics.json`` did not finish.

    A sweep dir of an Optuna study: the jobs of every sweep dir of the study (numbered as its
    trials), a trial that a kill interrupted said so.
    """
    from mnist_lit.sweeps.studies import interrupted_trials, load_study_of, study_sweep_dirs

    study = load_study_of(sweep_dir)
    if study is None:
        return _jobs_in(sweep_dir)
    by_number: dict[int, Job] = {}
    for each in [*study_sweep_dirs(study), sweep_dir]:
        if each.is_dir():
            by_number |= {job.number: job for job in _jobs_in(each)}
    for number in interrupted_trials(study):
        if number in by_number:
            by_number[number].status = "interrupted, run again"
    return [by_number[n] for n in sorted(by_number)]


def _jobs_in(sweep_dir: Path) -> list[Job]:
    jobs = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=_number):
        overrides_file = job_dir / ".hydra" / "overrides.yaml"
        overrides = list(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
        job = Job(number=int(job_dir.name), overrides=[str(o) for o in overrides])
        summary_file = job_dir / RUN_SUMMARY_FILE
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
            job.metrics = summary.get("metrics", {})
            job.seed, job.epochs = summary.get("seed"), summary.get("epochs")
            job.fit_seconds = summary.get("fit_seconds")
        jobs.append(job)
    return jobs


def _number(path: Path) -> int:
    return int(path.name)


def _canonical(value: str) -> str:
    """``True``/``true`` are one value (Hydra writes swept booleans capitalized)."""
    return value.lower() if value.lower() in ("true", "false") else value


def rounded(value: str, digits: int = 3) -> str:
    """A setting's value for display: a decimal number to ``digits`` significant digits
    (``0.000587194737873281`` -> ``0.000587``), anything else as it is."""
    try:
        number = float(value)
    except ValueError:
        return value
    if not any(c in value for c in ".eE") or not math.isfinite(number):
        return value  # an integer, or inf/nan: already short
    shown = f"{number:.{digits}g}"
    return shown if any(c in shown for c in ".e") else f"{shown}.0"  # a float stays one


def varying_keys(jobs: list[Job]) -> set[str]:
    """Settings whose value differs between jobs: the ones a table needs to show."""
    keys = {key for job in jobs for key in job.settings}
    return {key for key in keys if len({j.settings.get(key, "(default)") for j in jobs}) > 1}


def common_settings(jobs: list[Job]) -> str:
    varying = varying_keys(jobs)
    shared = {k: v for j in jobs for k, v in j.settings.items() if k not in varying}
    return " ".join(f"{k}={rounded(v)}" for k, v in sorted(shared.items())) or "none"


def metric_names(jobs: list[Job]) -> tuple[str, str]:
    """The metric to sort by (test accuracy when tested) and the validation one."""
    tested = any("test/acc" in j.metrics for j in jobs)
    return ("test/acc" if tested else "val/acc_best"), "val/acc_best"


def accuracy_columns(jobs: list[Job]) -> list[str]:
    """val/acc_best, then test/acc when tested: an untested sweep sorts by the first, once."""
    sort_by, val = metric_names(jobs)
    return [val] if sort_by == val else [val, sort_by]
