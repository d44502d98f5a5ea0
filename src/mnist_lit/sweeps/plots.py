"""The sweep report's pictures: ``report.png`` (accuracy per config) and, for an Optuna study,
Optuna's ``optimization_history.png``, ``param_importances.png`` and ``parallel_coordinate.png``."""

from __future__ import annotations

import logging
import textwrap
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_lit.sweeps.jobs import Job, metric_names
from mnist_lit.sweeps.stats import group_jobs

if TYPE_CHECKING:
    import optuna
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
    """Optuna's views of the study a sweep dir belongs to: ``optimization_history.png`` once a
    trial completed, ``param_importances.png`` and ``parallel_coordinate.png`` once two did; a
    view Optuna cannot give (importances without scikit-learn) is left out with a warning."""
    from mnist_lit.sweeps.studies import load_study_of

    study = load_study_of(sweep_dir)
    if study is None:
        return []
    import optuna
    from optuna.trial import TrialState

    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    views = [("optimization_history.png", history_figure)] if completed else []
    if completed >= 2:
        views += [
            ("param_importances.png", importances_figure),
            ("parallel_coordinate.png", parallel_coordinate_figure),
        ]
    plt = _pyplot()
    written = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, draw in views:
        try:
            fig = draw(study, metric)
        except (ImportError, RuntimeError, ValueError) as err:
            log.warning("no %s: %s", name, str(err).splitlines()[0])
            continue
        fig.savefig(sweep_dir / name, dpi=120)
        plt.close(fig)
        written.append(sweep_dir / name)
    return written


@contextmanager
def optuna_view() -> Iterator[None]:
    """Within: Optuna's matplotlib views draw without changing the global style (they set
    ggplot's) and without warnings that need no action ("experimental", a flat axis)."""
    import matplotlib
    import optuna

    _pyplot()
    with matplotlib.rc_context(), warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # a param with one value so far (two trials, the same choice) has a flat axis: fine
        warnings.filterwarnings("ignore", "Attempting to set identical low and high ylims")
        yield


def history_figure(study: optuna.Study, metric: str) -> Figure:
    """Optuna's optimization history: each trial's ``metric`` and the best so far."""
    from optuna.visualization import matplotlib as views

    with optuna_view():
        ax = views.plot_optimization_history(study, target_name=metric)
    ax.set_ylabel(metric)
    fig = figure_of(ax)
    fig.tight_layout()
    return fig


def importances_figure(study: optuna.Study, metric: str) -> Figure:
    """Optuna's parameter importances for ``metric`` over the completed trials (its
    mean-decrease-impurity evaluator, a seeded random forest of scikit-learn's)."""
    from optuna.importance import MeanDecreaseImpurityImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as views

    with optuna_view():
        ax = views.plot_param_importances(
            study, evaluator=MeanDecreaseImpurityImportanceEvaluator(seed=0), target_name=metric
        )
    # failed and interrupted trials have no value: the importances are of the completed ones
    completed = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    ax.set_title(f"Parameter importances, {completed} completed trials", loc="left")
    ax.set_xlabel(f"importance for {metric} (mean decrease in impurity)")
    fig = figure_of(ax)
    fig.set_size_inches(6, 0.4 * len(ax.get_yticks()) + 1.6)
    fit_to_labels(fig, plot_width=4.0)
    return fig


def parallel_coordinate_figure(study: optuna.Study, metric: str) -> Figure:
    """Optuna's parallel coordinates: each completed trial as a line through its params."""
    from optuna.visualization import matplotlib as views

    with optuna_view():
        ax = views.plot_parallel_coordinate(study, target_name=metric)
    fig = figure_of(ax)
    fig.set_size_inches(max(8.0, 1.6 * (len(ax.get_xticks()) + 1)), 5.0)
    fig.tight_layout()
    return fig


def figure_of(ax: Any) -> Figure:
    """The figure an Optuna view drew into."""
    from matplotlib.figure import Figure

    fig = ax.get_figure(root=True)
    assert isinstance(fig, Figure), "Optuna draws into a figure of its own"
    return fig
