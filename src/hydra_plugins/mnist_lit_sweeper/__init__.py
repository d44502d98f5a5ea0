"""The Hydra side of the sweeps extra. Hydra imports this at every start (plugin discovery), so it
loads nothing more: the search (``mnist_lit.sweeps``, Optuna) and the report load when a sweep
runs, and without the extra each says in one line what to install.

- ``ResumableOptunaSweeper``: ``hparams_search=optuna``'s sweeper (``sweeps/optuna_sweeper.py``);
- ``SweepReport``: the callback that writes ``report.md`` when a multirun ends (``conf/hydra``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

#: what the Optuna search imports, brought by the sweeps extra
SEARCH_MODULES = ("optuna",)


class ResumableOptunaSweeper(Sweeper):
    """Stands for ``mnist_lit.sweeps.optuna_sweeper.ResumableOptunaSweeper``, built at setup.

    Its config (``conf/hydra/sweeper/resumable_optuna.yaml``) is not built recursively: the
    sampler, an Optuna class, is built here once the extra is found.
    """

    def __init__(self, **arguments: Any) -> None:
        self.arguments = arguments
        self.search: Sweeper | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.utils import instantiate

        from mnist_lit.errors import require_extra

        require_extra("sweeps", *SEARCH_MODULES)
        from mnist_lit.sweeps.optuna_sweeper import ResumableOptunaSweeper as Search

        sampler = self.arguments.get("sampler")
        self.search = Search(**{**self.arguments, "sampler": instantiate(sampler)})
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.search is not None, "setup() builds the search"
        return self.search.sweep(arguments)


class SweepReport(Callback):
    """Writes the sweep report when a multirun ends (``python -m mnist_lit.sweeps.report``).

    A report needs the core's libraries only, except an Optuna study's, which reads the study:
    without the extra that one is left out, in one line that says what to install.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from mnist_lit.errors import UserError, require_extra
        from mnist_lit.sweeps.studies import STUDY_FILE

        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            require_extra("sweeps", *(["optuna"] if (sweep_dir / STUDY_FILE).is_file() else []))
        except UserError as err:
            print(f"[mnist-lit] no sweep report: {err}")
            return
        from mnist_lit.sweeps.report import write_report

        print(f"[mnist-lit] sweep report: {write_report(sweep_dir)}")
        if importlib.util.find_spec("mlflow") is not None:  # the jobs logged to MLflow, maybe
            from mnist_lit.trackers.mlflow_logger import finish_sweep_parent

            try:
                if finish_sweep_parent(sweep_dir):
                    print("[mnist-lit] the sweep's MLflow parent run has its report and best job")
            except UserError as err:
                print(f"[mnist-lit] the sweep's MLflow parent run is left as it was: {err}")
