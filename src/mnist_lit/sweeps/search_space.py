"""The Optuna search space of ``hparams_search=optuna``, from Hydra's override grammar.

``hydra.sweeper.params`` (and any sweep on the command line) is written as Hydra overrides:

- ``choice(a, b, ...)``: one of the values (Optuna's ``CategoricalDistribution``);
- ``interval(low, high)``: a float between ``low`` and ``high`` (``FloatDistribution``);
  ``tag(log, interval(low, high))`` draws it on a log scale;
- ``range(start, stop[, step])``: the integers Hydra's ``range`` lists (``stop`` excluded), as an
  ``IntDistribution``; ``tag(log, range(...))`` on a log scale (step 1 only). A range of floats,
  or ``shuffle(range(...))``, is a choice of the numbers it lists.

Any other override (``model=mlp``, ``+trainer.limit_train_batches=40``) is passed as written to
every trial. The grammar hydra-optuna-sweeper took, which this replaces (its ranges included
``stop``; a range of floats was a stepped float there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from mnist_lit.errors import UserError

#: the only tag the grammar's ``tag(...)`` takes here
LOG_TAG = "log"


@dataclass(frozen=True)
class SearchSpace:
    """What each trial samples, and the overrides every trial gets as they are."""

    distributions: dict[str, BaseDistribution]
    fixed: list[str]

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        """A trial's command line: its sampled ``params``, then the fixed overrides."""
        return [*(f"{name}={value}" for name, value in params.items()), *self.fixed]


def params_overrides(params: Mapping[str, Any] | None) -> list[str]:
    """``hydra.sweeper.params`` (``{key: "interval(0, 1)"}``) as override strings."""
    return [f"{key}={value}" for key, value in (params or {}).items()]


def search_space(overrides: Sequence[str]) -> SearchSpace:
    """Parse ``overrides`` (the sweeper's params, then the command line's: a later one of the
    same key wins) into Optuna distributions and fixed overrides."""
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.get_key_element()
        distributions.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            distributions[key] = distribution(override)
        else:
            fixed[key] = str(override.input_line)
    return SearchSpace(distributions, list(fixed.values()))


def distribution(override: Override) -> BaseDistribution:
    """The Optuna distribution of one sweep override (``key=interval(0, 1)``...)."""
    key = override.get_key_element()
    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()))
    if tags - {LOG_TAG}:
        raise UserError(
            f"{override.input_line}: Optuna's search knows only the tag {LOG_TAG!r}"
            f" (tag(log, interval(low, high))), not {', '.join(sorted(tags - {LOG_TAG}))}"
        )
    log = LOG_TAG in tags
    try:
        if isinstance(sweep, IntervalSweep):
            assert sweep.start is not None and sweep.end is not None  # the grammar needs both
            return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
        values = list(override.sweep_iterator(transformer=Transformer.encode))
        if isinstance(sweep, RangeSweep) and not sweep.shuffle:
            if not values:
                raise ValueError(f"range({sweep.start}, {sweep.stop}, {sweep.step}) lists no value")
            numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
            if len(numbers) == len(values):
                step = abs(int(sweep.step)) if sweep.step is not None else 1
                return IntDistribution(min(numbers), max(numbers), log=log, step=step)
        if log:
            raise ValueError("tag(log, ...) takes an interval or a range of integers")
        # (the grammar's encoding leaves numbers, booleans and text as they are, and writes
        # anything else, a list or null, as its override text)
        return CategoricalDistribution(
            [v if isinstance(v, (str, int, float, bool)) else str(v) for v in values]
        )
    except ValueError as err:
        raise UserError(
            f"hydra.sweeper.params: {key}: {err} (choice(a, b), interval(low, high),"
            " tag(log, interval(low, high)) or range(start, stop, step))"
        ) from None
