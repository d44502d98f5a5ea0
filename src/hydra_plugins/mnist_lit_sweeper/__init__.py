"""The Hydra side of the sweeps extra: Hydra imports this at every start (plugin discovery), so it
loads nothing: the search (``mnist_lit.sweeps``, Optuna) and the report load when a sweep runs.

- ``ResumableOptunaSweeper``: ``hparams_search=optuna``'s sweeper (``sweeps/optuna_sweeper.py``);
- ``SweepReport``: the callback that writes ``report.md`` when a multirun ends (``conf/hydra``).
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ResumableOptunaSweeper(Sweeper):
    """Stands for ``mnist_lit.sweeps.optuna_sweeper.ResumableOptunaSweeper``, built at setup."""

    def __init__(self, **arguments: Any) -> None:
        self.arguments = arguments
        self.search: Sweeper | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from mnist_lit.errors import require_extra

        require_extra("sweeps", "optuna", "hydra_plugins.hydra_optuna_sweeper")
        from mnist_lit.sweeps.optuna_sweeper import ResumableOptunaSweeper as Search

        self.search = Search(**self.arguments)
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.search is not None, "setup() builds the search"
        return self.search.sweep(arguments)


class SweepReport(Callback):
    """Writes the sweep report when a multirun ends (``python -m mnist_lit.sweeps.report``)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mnist_lit.errors import UserError, require_extra

        try:
            require_extra("sweeps", "matplotlib")
        except UserError as err:
            print(f"[mnist-lit] no sweep report: {err}")
            return
        from mnist_lit.sweeps.report import write_report

        print(f"[mnist-lit] sweep report: {write_report(config.hydra.sweep.dir)}")
