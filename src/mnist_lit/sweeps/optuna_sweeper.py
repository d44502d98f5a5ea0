"""``ResumableOptunaSweeper``: hydra-optuna-sweeper's search, resumed from its stored study.

hydra-optuna-sweeper opens a stored study (``load_if_exists``) but then runs ``n_trials`` more,
numbers its jobs from 0 in every sweep dir, and a trial a kill left RUNNING stays so for ever.
This sweeper prepares the study first (``studies.resume_study``: interrupted trials failed and
queued again, the trials done counted), then lets the plugin run only what is left, with job
numbers equal to trial numbers. ``hydra_plugins.mnist_lit_sweeper`` builds it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig


class ResumableOptunaSweeper(OptunaSweeper):
    """An Optuna sweep that goes on with its study until it holds ``n_trials`` ended trials."""

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.sampler_config = config.hydra.sweeper.get("sampler")

    def sweep(self, arguments: list[str]) -> None:
        import optuna

        from mnist_lit.errors import reported_errors
        from mnist_lit.sweeps.studies import directions, only_search_of, open_storage, resume_study

        search = self.sweeper
        if search.storage is None:  # an in-memory study: nothing to go on with
            return search.sweep(arguments)
        storage = str(search.storage)
        with reported_errors(), only_search_of(storage, str(search.study_name)):
            study = optuna.create_study(
                study_name=search.study_name,
                storage=open_storage(storage),
                directions=directions(search.direction),
                load_if_exists=True,
            )
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            resumed = resume_study(study, storage, arguments, search.n_trials, self.sweep_dir)
            print(
                f"[mnist-lit] study {study.study_name!r} ({storage}): {resumed.done} of"
                f" {search.n_trials} trials done, {resumed.to_run} to run"
                + (
                    f", trials {resumed.requeued} were interrupted: run again"
                    if resumed.requeued
                    else ""
                )
            )
            if resumed.first_number > 0:
                search.sampler = self._sampler_going_on_at(resumed.first_number, search.sampler)
            search.n_trials = resumed.to_run
            search.job_idx = resumed.first_number
            return search.sweep(arguments)

    def _sampler_going_on_at(self, trial_number: int, sampler: Any) -> Any:
        """The seeded sampler, seeded anew for a study that holds ``trial_number`` trials.

        With its first seed, a resumed sampler would draw again the random trials it drew
        before the kill (TPE's first ``n_startup_trials`` are random): seed + trials so far
        draws new ones, the same for the same study.
        """
        seed = self.sampler_config.get("seed") if self.sampler_config else None
        if not isinstance(seed, int) or "_target_" not in self.sampler_config:
            return sampler  # unseeded: fresh draws anyway
        return instantiate(self.sampler_config, seed=seed + trial_number)
