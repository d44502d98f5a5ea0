"""Sweep reports: what a Hydra multirun found, in one table, from each job's ``metrics.json``.

Written after every multirun (a Hydra callback, ``conf/hydra/default.yaml``) and on demand::

    python -m mnist_lit.sweeps.report logs/train/multiruns/<time>

into the sweep dir: ``report.md`` (jobs sorted by test accuracy; configs repeated over seeds
grouped as mean ± std with n; the effect of each two-valued swept setting, paired by seed),
``report.csv`` (one row per job) and ``report.png`` (test accuracy per config). For an Optuna
search (``studies.py``) the report covers every trial of the study, whichever sweep dir ran it,
and adds Optuna's views: ``optimization_history.png``, ``param_importances.png`` and
``parallel_coordinate.png``.

Values are shown to 3 significant digits (a sampled ``optimizer.lr=0.000587``), accuracies in
percent with 2 decimals; ``report.csv``, data for other programs, keeps every digit. The jobs are
read by ``jobs.py``, summed up by ``stats.py`` and drawn by ``plots.py``.
"""

from __future__ import annotations

import argparse
import csv
import io
from collections.abc import Sequence
from pathlib import Path

import yaml

from mnist_lit.errors import UserError, atomic_write_bytes, reported_errors
from mnist_lit.sweeps.jobs import (
    Job,
    accuracy_columns,
    common_settings,
    load_jobs,
    metric_names,
    varying_keys,
)
from mnist_lit.sweeps.plots import render_plot, render_study_plots
from mnist_lit.sweeps.stats import effects, fmt, group_jobs


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_markdown(sweep_dir: Path, jobs: list[Job]) -> str:
    sort_by, _ = metric_names(jobs)
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
    accuracies = accuracy_columns(jobs)
    names = " | ".join(accuracies)
    if any(len(g.jobs) > 1 for g in groups):
        out.write("## Configs (mean ± std over seeds)\n\n")
        out.write(f"| config | n | {names} | gap | epochs | time (s) |\n")
        out.write("|---|---|" + "---|" * len(accuracies) + "---|---|---|\n")
        for g in groups:
            values = " | ".join(fmt(g.stats(name)) for name in accuracies)
            out.write(
                f"| {g.config} | {len(g.jobs)} | {values} | {fmt(g.stats('gap'))} | "
                f"{fmt(g.stats('epochs'), 0)} | {fmt(g.stats('fit_seconds'), 0)} |\n"
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
        " `optimization_results.yaml`, Optuna's views: `optimization_history.png`,"
        " `param_importances.png` and `parallel_coordinate.png` (once 2 trials completed).\n\n"
    )


def render_csv(jobs: list[Job]) -> str:
    """One row per job, best first: its overrides, seed, metrics (fractions), epochs and time."""
    sort_by, _ = metric_names(jobs)
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
    render_study_plots(sweep_dir, metric_names(jobs)[0])
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
