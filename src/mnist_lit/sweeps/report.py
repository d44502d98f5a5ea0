"""Sweep reports: what a Hydra multirun found, in one table, from each job's ``metrics.json``.

Written after every multirun (a Hydra callback, ``conf/hydra/default.yaml``) and on demand::

    python -m mnist_lit.sweeps.report logs/train/multiruns/<time>

into the sweep dir: ``report.md`` (jobs sorted by test accuracy; configs repeated over seeds
grouped as mean ± std with n; the effect of each two-valued swept setting, paired by seed),
``report.csv`` (one row per job) and ``report.png`` (test accuracy per config). For an Optuna
search (``studies.py``) the report covers every trial of the study, whichever sweep dir ran it,
and adds Optuna's views: ``optimization_history.png`` and ``param_importances.png``.

Values are shown to 3 significant digits (a sampled ``optimizer.lr=0.000587``), accuracies in
percent with 2 decimals; ``report.csv``, data for other programs, keeps every digit.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import statistics
import textwrap
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from omegaconf import OmegaConf

from mnist_lit.errors import UserError, atomic_write_bytes, reported_errors

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: what train.py writes into each run dir when it finishes
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


# ----------------------------------------------------------------------------- statistics


def mean_std(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    """Mean, sample std (0 for one value) and n of the values that exist."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    return statistics.fmean(present), spread, len(present)


def _fmt(stats: tuple[float, float, int] | None, decimals: int = 2, signed: bool = False) -> str:
    if stats is None:
        return "-"
    mean, std, n = stats
    sign = "+" if signed else ""
    return f"{mean:{sign}.{decimals}f}" + (f" ± {std:.{decimals}f}" if n > 1 else "")


@dataclass
class Group:
    """Jobs that trained the same config with different seeds."""

    config: str
    jobs: list[Job]

    def stats(self, what: str) -> tuple[float, float, int] | None:
        if what == "gap":
            return mean_std([j.gap for j in self.jobs])
        if what in ("epochs", "fit_seconds"):
            return mean_std([getattr(j, what) for j in self.jobs])
        return mean_std([j.percent(what) for j in self.jobs])


def group_jobs(jobs: list[Job], sort_by: str) -> list[Group]:
    """Finished jobs grouped by config, best mean ``sort_by`` first."""
    groups: dict[str, list[Job]] = defaultdict(list)
    shown = varying_keys(jobs)
    for job in jobs:
        if job.finished:
            groups[job.config(shown)].append(job)
    ranked = [Group(config, members) for config, members in groups.items()]
    return sorted(ranked, key=lambda g: -(g.stats(sort_by) or (-1.0, 0, 0))[0])


def effects(jobs: list[Job], metric: str) -> list[str]:
    """For each swept setting with two values: its effect on ``metric`` and on the gap.

    Jobs are paired when every other setting and the seed match, so each difference compares
    like with like; reported per model when the model is swept too.
    """
    finished = [j for j in jobs if j.finished]
    values: dict[str, list[str]] = defaultdict(list)
    for job in finished:
        for key, value in job.settings.items():
            if value not in values[key]:
                values[key].append(value)
    lines = []
    for key, levels in values.items():
        if len(levels) != 2 or key == "model":
            continue
        low, high = sorted(levels, key=_as_number)
        by_rest: dict[tuple, dict[str, Job]] = defaultdict(dict)
        for job in finished:
            rest = tuple(sorted((k, v) for k, v in job.settings.items() if k != key))
            by_rest[(rest, job.seed)][job.settings.get(key, "")] = job
        per_model: dict[str, list[tuple[float, float | None]]] = defaultdict(list)
        for (rest, _seed), pair in by_rest.items():
            if low in pair and high in pair:
                model = dict(rest).get("model", "all")
                high_acc, low_acc = pair[high].percent(metric), pair[low].percent(metric)
                if high_acc is None or low_acc is None:
                    continue
                high_gap, low_gap = pair[high].gap, pair[low].gap
                gap = None if high_gap is None or low_gap is None else high_gap - low_gap
                per_model[model].append((high_acc - low_acc, gap))
        for model, diffs in sorted(per_model.items()):
            on_accuracy = mean_std([d[0] for d in diffs])
            on_gap = mean_std([d[1] for d in diffs])
            lines.append(
                f"- **{model}**: {key} {low} → {high} changes {metric} by "
                f"{_fmt(on_accuracy, signed=True)} points and the train-val gap by "
                f"{_fmt(on_gap, signed=True)} points (n = {len(diffs)} pairs)"
            )
    return lines


def _as_number(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, {"false": "0", "true": "1"}.get(text.lower(), text))


# ----------------------------------------------------------------------------- writing


def _metric_names(jobs: list[Job]) -> tuple[str, str]:
    """The metric to sort by (test accuracy when tested) and the validation one."""
    tested = any("test/acc" in j.metrics for j in jobs)
    return ("test/acc" if tested else "val/acc_best"), "val/acc_best"


def _accuracy_columns(jobs: list[Job]) -> list[str]:
    """val/acc_best, then test/acc when tested: an untested sweep sorts by the first, once."""
    sort_by, val = _metric_names(jobs)
    return [val] if sort_by == val else [val, sort_by]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_markdown(sweep_dir: Path, jobs: list[Job]) -> str:
    sort_by, _ = _metric_names(jobs)
    finished = [j for j in jobs if j.finished]
    out = io.StringIO()
    out.write(f"# Sweep report: `{sweep_dir}`\n\n")
    study = _study_line(sweep_dir)
    if study:
        out.write(study)
    out.write(
        f"{len(finished)} of {len(jobs)} jobs finished. Accuracies in percent; the gap is train "
        f"minus val accuracy at the last epoch. Sorted by {sort_by}.\n\n"
        f"Common to every job: `{common_settings(jobs)}`\n\n"
    )
    shown = varying_keys(jobs)
    groups = group_jobs(jobs, sort_by)
    accuracies = _accuracy_columns(jobs)
    names = " | ".join(accuracies)
    if any(len(g.jobs) > 1 for g in groups):
        out.write("## Configs (mean ± std over seeds)\n\n")
        out.write(f"| config | n | {names} | gap | epochs | time (s) |\n")
        out.write("|---|---|" + "---|" * len(accuracies) + "---|---|---|\n")
        for g in groups:
            values = " | ".join(_fmt(g.stats(name)) for name in accuracies)
            out.write(
                f"| {g.config} | {len(g.jobs)} | {values} | {_fmt(g.stats('gap'))} | "
                f"{_fmt(g.stats('epochs'), 0)} | {_fmt(g.stats('fit_seconds'), 0)} |\n"
            )
        out.write("\n")
    lines = effects(jobs, sort_by)
    if lines:
        out.write("## Effects (paired by seed, mean ± std of the differences)\n\n")
        out.write("\n".join(lines) + "\n\n")
    out.write("## Jobs\n\n")
    out.write(f"| job | overrides | seed | {names} | gap | epochs | time (s) |\n")
    out.write("|---|---|---|" + "---|" * len(accuracies) + "---|---|---|\n")
    for job in sorted(finished, key=lambda j: -(j.percent(sort_by) or -1)):
        values = " | ".join(_percent(job.percent(name)) for name in accuracies)
        seconds = "-" if job.fit_seconds is None else f"{job.fit_seconds:.0f}"
        out.write(
            f"| {job.number} | {job.config(shown)} | {job.seed} | {values} | "
            f"{_percent(job.gap)} | {job.epochs} | {seconds} |\n"
        )
    blanks = " |" * (len(accuracies) + 2)
    for job in (j for j in jobs if not j.finished):
        out.write(f"| {job.number} | {job.config(shown)} | - | {job.status} |{blanks}\n")
    return out.getvalue()


def _study_line(sweep_dir: Path) -> str:
    """For a sweep dir of an Optuna study: which study, and that every trial is reported."""
    from mnist_lit.sweeps.studies import STUDY_FILE

    record_file = sweep_dir / STUDY_FILE
    if not record_file.is_file():
        return ""
    record = yaml.safe_load(record_file.read_text())
    return (
        f"Every trial of Optuna study `{record['study_name']}` (`{record['storage']}`), job"
        " number = trial number, whichever sweep dir ran it; best trial:"
        " `optimization_results.yaml`, views: `optimization_history.png`,"
        " `param_importances.png` (once 2 trials ended).\n\n"
    )


def render_csv(jobs: list[Job]) -> str:
    """One row per job, best first: its overrides, seed, metrics (fractions), epochs and time."""
    sort_by, _ = _metric_names(jobs)
    metrics = {"val_acc_best": "val/acc_best", "test_acc": "test/acc"}
    metrics |= {"train_acc": "train/acc", "val_acc": "val/acc"}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["job", "overrides", "seed", *metrics, "gap", "epochs", "fit_seconds", "finished"]
    )
    for job in sorted(jobs, key=lambda j: -(j.percent(sort_by) or -1)):
        values = [job.metrics.get(name) for name in metrics.values()]
        timing = [job.gap, job.epochs, job.fit_seconds, job.finished]
        writer.writerow([job.number, " ".join(job.overrides), job.seed, *values, *timing])
    return out.getvalue()


#: a bar label wraps at this many characters; the figure widens to fit the longest line
LABEL_WIDTH = 60


def wrap_label(text: str, width: int = LABEL_WIDTH) -> str:
    """``k=v k=v ...`` on lines of at most ``width`` characters, a longer word cut."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=True)) or text


def plot_figure(jobs: list[Job]) -> Figure:
    """Horizontal bars of the sorted metric per config, with the spread over seeds.

    The figure is sized to its labels, measured once drawn: any override length fits.
    """
    plt = _pyplot()
    sort_by, _ = _metric_names(jobs)
    measured = [(g, g.stats(sort_by)) for g in group_jobs(jobs, sort_by)[::-1]]  # best on top
    groups = [g for g, s in measured if s is not None]
    stats = [s for _, s in measured if s is not None]
    labels = [wrap_label(g.config) for g in groups]
    lines = sum(label.count("\n") + 1 for label in labels)
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.2 * lines + 0.25 * len(groups) + 1.0))
    ax.barh(
        range(len(groups)),
        [s[0] for s in stats],
        xerr=[s[1] for s in stats],
        color="tab:blue",
        alpha=0.8,
        capsize=3,
    )
    ax.set_yticks(range(len(groups)), labels, fontsize=8)
    low = min(s[0] - s[1] for s in stats) if stats else 0
    ax.set_xlim(max(0.0, low - 0.5), 100.0)
    ax.set_xlabel(f"{sort_by} (%), mean ± std over seeds")
    fit_to_labels(fig, plot_width=6.0)
    return fig


def fit_to_labels(fig: Figure, plot_width: float) -> None:
    """Widen ``fig`` so that its tick labels and titles fit beside a ``plot_width``-inch plot."""
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    (ax,) = fig.axes
    fig.tight_layout()
    drawn = ax.get_tightbbox(renderer)
    if drawn is None:  # nothing drawn
        return
    labels = (drawn.width - ax.get_window_extent(renderer).width) / fig.dpi
    fig.set_figwidth(max(fig.get_figwidth(), labels + plot_width + 0.5))
    fig.tight_layout()


def _pyplot() -> Any:
    """pyplot drawing into files only (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_plot(jobs: list[Job], path: Path) -> None:
    plt = _pyplot()
    fig = plot_figure(jobs)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_study_plots(sweep_dir: Path, metric: str) -> list[Path]:
    """Optuna's views of the study a sweep dir belongs to: ``optimization_history.png`` and
    ``param_importances.png`` (Optuna's mean-decrease-impurity importances, which need
    scikit-learn); the ones the study cannot give yet (too few trials) are left out."""
    from mnist_lit.sweeps.studies import load_study_of

    study = load_study_of(sweep_dir)
    if study is None or not study.best_trials:
        return []
    plt = _pyplot()
    import matplotlib
    import optuna
    from optuna.visualization import matplotlib as views

    written = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with matplotlib.rc_context(), warnings.catch_warnings():  # (it sets the ggplot style)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = views.plot_optimization_history(study, target_name=metric)
    ax.set_ylabel(metric)
    path = sweep_dir / "optimization_history.png"
    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)
    written.append(path)
    try:
        from optuna.importance import MeanDecreaseImpurityImportanceEvaluator

        # (fANOVA, Optuna 2.10's default, fails under numpy 2; its matplotlib view of the
        # importances under matplotlib 3.9, so the bars are drawn here)
        importances = optuna.importance.get_param_importances(
            study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=0)
        )
    except (ImportError, RuntimeError, ValueError) as err:
        log.warning("no param_importances.png: %s", str(err).splitlines()[0])
        return written
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(importances) + 1.2))
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:blue", alpha=0.8)
    ax.set_xlabel(f"importance for {metric} (Optuna, mean decrease in impurity)")
    ax.set_title(f"Parameter importances, {len(study.trials)} trials")
    fit_to_labels(fig, plot_width=4.0)
    path = sweep_dir / "param_importances.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def write_report(sweep_dir: str | Path) -> Path:
    """Write report.md, report.csv and report.png into ``sweep_dir``; return report.md's path."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    if not jobs:
        raise UserError(f"{sweep_dir} has no job folders (0/, 1/, ...): is it a multirun?")
    atomic_write_bytes(sweep_dir / "report.md", render_markdown(sweep_dir, jobs).encode())
    atomic_write_bytes(sweep_dir / "report.csv", render_csv(jobs).encode())
    if any(j.finished for j in jobs):
        render_plot(jobs, sweep_dir / "report.png")
    render_study_plots(sweep_dir, _metric_names(jobs)[0])
    return sweep_dir / "report.md"


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m mnist_lit.sweeps.report <sweep dir>``: (re)write a finished sweep's report."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("sweep_dir", type=Path, help="e.g. logs/train/multiruns/<time>")
    args = parser.parse_args(argv)
    with reported_errors():
        if not args.sweep_dir.is_dir():
            raise UserError(f"{args.sweep_dir} is not a folder: pass a multirun dir")
        path = write_report(args.sweep_dir)
    print(path.read_text())


if __name__ == "__main__":
    main()
