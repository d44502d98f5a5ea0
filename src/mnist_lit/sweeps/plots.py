"""The sweep report's pictures: ``report.png`` (accuracy per config) and, for an Optuna study,
Optuna's ``optimization_history.png`` and ``param_importances.png``."""

from __future__ import annotations

import logging
import textwrap
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_lit.sweeps.jobs import Job, metric_names
from mnist_lit.sweeps.stats import group_jobs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

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
    sort_by, _ = metric_names(jobs)
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
