"""``ResumableOptunaSweeper``: ``hparams_search=optuna``'s search, on Optuna's ask-and-tell API.

Each round asks the study for ``n_jobs`` trials (``study.ask`` with the search space of
``search_space.py``), launches them as one batch of jobs with Hydra's launcher, numbered as the
trials, and tells the study each job's value, or that it failed. A stored study is prepared first
(``studies.resume_study``: the trials a kill left running failed and queued again, the trials done
counted), so the search runs only what is left of ``n_trials``. ``hydra_plugins.mnist_lit_sweeper``
builds it when a search starts; it uses Hydra's public ``Sweeper`` and ``Launcher`` API only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
import yaml
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.trial import TrialState

from mnist_lit.errors import FAILED, UserError, atomic_write_bytes, reported_errors
from mnist_lit.sweeps.search_space import SearchSpace, params_overrides, search_space
from mnist_lit.sweeps.studies import (
    directions,
    only_search_of,
    open_storage,
    resume_study,
    study_errors,
)

log = logging.getLogger(__name__)

#: the best trial (or the Pareto front), written into the sweep dir when the search ends
RESULTS_FILE = "optimization_results.yaml"


class ResumableOptunaSweeper(Sweeper):
    """An Optuna search that goes on with its study until it holds ``n_trials`` ended trials."""

    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        max_failure_rate: float,
        params: Mapping[str, Any] | None,
    ) -> None:
        for key, value, fine in (
            ("n_trials", n_trials, n_trials >= 0),
            ("n_jobs", n_jobs, n_jobs >= 1),
            ("max_failure_rate", max_failure_rate, 0.0 <= max_failure_rate <= 1.0),
        ):
            if not fine:
                raise UserError(
                    f"hydra.sweeper.{key}={value}: n_trials must be 0 or more, n_jobs 1 or more,"
                    " max_failure_rate a share between 0 and 1"
                )
        self.sampler = sampler
        self.direction = direction
        self.storage = None if storage is None else str(storage)
        self.study_name = study_name
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.max_failure_rate = max_failure_rate
        self.params = params
        self.sampler_config: Any = None
        self.sweep_dir = Path(".")

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.sampler_config = config.hydra.sweeper.get("sampler")

    def sweep(self, arguments: list[str]) -> None:
        """Run the trials left of the study (all ``n_trials`` for a new one), then write the
        best trial to ``optimization_results.yaml``."""
        with reported_errors():
            # the command line's sweeps and overrides come after (and win over) the config's
            space = search_space([*params_overrides(self.params), *arguments])
            if self.storage is None:  # in memory: nothing to go on with
                study = optuna.create_study(
                    study_name=self.study_name,
                    sampler=self.sampler,
                    directions=directions(self.direction),
                )
                self.run_trials(study, space, self.n_trials, "memory")
            else:
                with only_search_of(self.storage, str(self.study_name)):
                    study = self.resumed_study(arguments, space)
            self.save_results(study)

    def resumed_study(self, arguments: Sequence[str], space: SearchSpace) -> optuna.Study:
        """Open (or create) the stored study, prepare it and run the trials it lacks."""
        assert self.storage is not None
        storage = self.storage
        with study_errors(storage):
            study = optuna.create_study(
                study_name=self.study_name,
                storage=open_storage(storage),
                sampler=self.sampler,
                directions=directions(self.direction),
                load_if_exists=True,
            )
            self.sweep_dir.mkdir(parents=True, exist_ok=True)
            resumed = resume_study(study, storage, arguments, self.n_trials, self.sweep_dir)
        print(
            f"[mnist-lit] study {study.study_name!r} ({storage}): {resumed.done} of"
            f" {self.n_trials} trials done, {resumed.to_run} to run"
            + (
                f", trials {resumed.requeued} were interrupted: run again"
                if resumed.requeued
                else ""
            )
        )
        if resumed.first_number > 0:
            study.sampler = self.sampler_going_on_at(resumed.first_number, study.sampler)
        self.run_trials(study, space, resumed.to_run, storage)
        return study

    def run_trials(
        self, study: optuna.Study, space: SearchSpace, to_run: int, storage: str
    ) -> None:
        """Ask, launch and tell ``to_run`` trials, ``n_jobs`` at a time (one launcher batch)."""
        assert self.launcher is not None, "setup() builds the launcher"
        while to_run > 0:
            batch = min(self.n_jobs, to_run)
            with study_errors(storage):
                trials = [study.ask(space.distributions) for _ in range(batch)]
            # job numbers are trial numbers: one search per study (only_search_of) asks them
            # in a row, the requeued ones first
            first = trials[0].number
            numbers = [t.number for t in trials]
            assert numbers == list(range(first, first + batch)), f"trials {numbers} not in a row"
            returns = self.launcher.launch(
                [space.overrides(t.params) for t in trials], initial_job_idx=first
            )
            failed: list[tuple[int, JobReturn, str]] = []
            with study_errors(storage):
                for trial, ret in zip(trials, returns, strict=True):
                    values, reason = objective_values(ret, len(study.directions))
                    if values is None:
                        log.warning("trial %d failed: %s", trial.number, reason)
                        study.tell(trial, state=TrialState.FAIL)
                        failed.append((trial.number, ret, reason))
                    else:
                        study.tell(trial, values)
            if len(failed) / len(returns) > self.max_failure_rate:
                raise_failures(failed, len(returns), self.max_failure_rate)
            to_run -= batch

    def save_results(self, study: optuna.Study) -> None:
        """``optimization_results.yaml``: the best trial's params and value (for several
        objectives, every Pareto-optimal trial's)."""
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not completed:
            log.warning("no trial of study %r completed: no %s", study.study_name, RESULTS_FILE)
            return
        results: dict[str, Any] = {"name": "optuna"}
        if len(study.directions) == 1:
            best = study.best_trial
            results |= {"best_params": best.params, "best_value": best.value}
            log.info("Best parameters: %s", best.params)
            log.info("Best value: %s", best.value)
        else:
            results["solutions"] = [
                {"params": t.params, "values": t.values} for t in study.best_trials
            ]
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(results, sort_keys=False)
        atomic_write_bytes(self.sweep_dir / RESULTS_FILE, text.encode())

    def sampler_going_on_at(self, trial_number: int, sampler: Any) -> Any:
        """The seeded sampler, seeded anew for a study that holds ``trial_number`` trials.

        With its first seed, a resumed sampler would draw again the random trials it drew
        before the kill (TPE's first ``n_startup_trials`` are random): seed + trials so far
        draws new ones, the same for the same study.
        """
        seed = self.sampler_config.get("seed") if self.sampler_config else None
        if not isinstance(seed, int) or "_target_" not in self.sampler_config:
            return sampler  # unseeded: fresh draws anyway
        return instantiate(self.sampler_config, seed=seed + trial_number)


def objective_values(ret: JobReturn, n_objectives: int) -> tuple[list[float] | None, str]:
    """A job's objective values, or ``None`` and why there are none (it raised, returned no
    number, or a value that is not finite)."""
    if ret.status == JobStatus.FAILED:
        try:
            ret.return_value  # noqa: B018 (a failed job's value raises its error)
        except Exception as err:
            return None, f"{type(err).__name__}: {err}"
    value = ret.return_value
    listed = isinstance(value, Sequence) and not isinstance(value, str)
    try:
        values = [float(v) for v in value] if listed else [float(value)]
    except (TypeError, ValueError):
        return None, f"it returned {value!r}, not a number (is optimized_metric logged?)"
    if len(values) != n_objectives:
        return None, f"it returned {len(values)} values for {n_objectives} objectives"
    if not all(math.isfinite(v) for v in values):
        return None, f"it returned {values}"
    return values, ""


def raise_failures(failed: list[tuple[int, JobReturn, str]], batch: int, rate: float) -> None:
    """Stop the search: a trial's own error as it was raised (its traceback shows where), or one
    line for trials that returned no value."""
    for _, ret, _ in failed:
        if ret.status == JobStatus.FAILED:
            ret.return_value  # noqa: B018 (raises the job's error)
    numbers = ", ".join(str(number) for number, _, _ in failed)
    raise UserError(
        f"trials {numbers} ({len(failed)} of a batch of {batch}) failed: {failed[0][2]}; the"
        f" search stops past hydra.sweeper.max_failure_rate={rate}: raise it to go on past"
        " failed trials",
        exit_code=FAILED,
    )
