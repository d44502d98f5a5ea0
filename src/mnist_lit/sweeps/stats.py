"""What a sweep's jobs say together: seeds grouped (mean ± std, n), and the effect of each
two-valued setting, from jobs paired by seed."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from mnist_lit.sweeps.jobs import Job, varying_keys


def mean_std(values: Sequence[float | None]) -> tuple[float, float, int] | None:
    """Mean, sample std (0 for one value) and n of the values that exist."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    spread = statistics.stdev(present) if len(present) > 1 else 0.0
    return statistics.fmean(present), spread, len(present)


def fmt(stats: tuple[float, float, int] | None, decimals: int = 2, signed: bool = False) -> str:
    """``mean ± std`` as the tables show it (the mean alone for one value, ``-`` for none)."""
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
                f"{fmt(on_accuracy, signed=True)} points and the train-val gap by "
                f"{fmt(on_gap, signed=True)} points (n = {len(diffs)} pairs)"
            )
    return lines


def _as_number(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, {"false": "0", "true": "1"}.get(text.lower(), text))
