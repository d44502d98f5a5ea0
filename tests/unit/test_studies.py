"""Optuna studies that survive a kill (``mnist_lit.sweeps.studies``), on SQLite files in tmp_path: no
training; trials are asked and told by hand as the sweeper would."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from mnist_lit.errors import UserError
from mnist_lit.sweeps.report import load_jobs
from mnist_lit.sweeps.studies import (
    STUDY_FILE,
    directions,
    interrupted_trials,
    load_study_of,
    only_search_of,
    open_storage,
    resume_study,
    sqlite_file,
)

COMMAND = ["hparams_search=optuna", "model=mlp"]


def _study(tmp_path: Path) -> tuple[optuna.Study, str]:
    storage = f"sqlite:///{tmp_path / 'optuna' / 'search.db'}"
    study = optuna.create_study(
        study_name="search", storage=open_storage(storage), direction="maximize",
        load_if_exists=True,
    )  # fmt: skip
    return study, storage


def _run_trial(study: optuna.Study, finish: bool = True) -> optuna.trial.Trial:
    trial = study.ask()
    trial.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True)
    if finish:
        study.tell(trial, 0.9)
    return trial


def test_the_storage_opens_again_after_it_is_created(tmp_path: Path) -> None:
    """Optuna 2.10 under SQLAlchemy 2 lost its schema stamp: the second open failed."""
    study, storage = _study(tmp_path)
    _run_trial(study)
    assert sqlite_file(storage) == tmp_path / "optuna" / "search.db"
    again = optuna.load_study(study_name="search", storage=open_storage(storage))
    assert [t.state for t in again.trials] == [TrialState.COMPLETE]


def test_a_fresh_study_runs_all_its_trials(tmp_path: Path) -> None:
    study, storage = _study(tmp_path)
    resumed = resume_study(study, storage, COMMAND, 5, tmp_path / "sweep1")
    assert (resumed.done, resumed.to_run, resumed.first_number, resumed.requeued) == (0, 5, 0, [])
    record = yaml.safe_load((tmp_path / "sweep1" / STUDY_FILE).read_text())
    assert record == {"study_name": "search", "storage": storage}


def test_a_killed_trial_fails_and_runs_again_with_its_params(tmp_path: Path) -> None:
    study, storage = _study(tmp_path)
    resume_study(study, storage, COMMAND, 4, tmp_path / "sweep1")
    _run_trial(study)
    _run_trial(study)
    killed = _run_trial(study, finish=False)  # the kill left it RUNNING

    resumed = resume_study(study, storage, list(reversed(COMMAND)), 4, tmp_path / "sweep2")
    assert (resumed.done, resumed.to_run, resumed.requeued) == (2, 2, [2])
    assert study.trials[2].state == TrialState.FAIL
    assert interrupted_trials(study) == [2]
    again = _run_trial(study)  # the next trial asked is the queued one, numbered as the jobs
    assert again.number == resumed.first_number == 3
    assert again.params == killed.params

    # one more kill of the rerun, then a full study: nothing more to run
    _run_trial(study)
    later = resume_study(study, storage, COMMAND, 4, tmp_path / "sweep3")
    assert (later.done, later.to_run) == (4, 0)
    assert study.user_attrs["sweep_dirs"] == [str(tmp_path / f"sweep{n}") for n in (1, 2, 3)]


def test_a_study_goes_on_only_with_the_command_that_started_it(tmp_path: Path) -> None:
    study, storage = _study(tmp_path)
    resume_study(study, storage, COMMAND, 3, tmp_path / "sweep1")
    with pytest.raises(UserError) as caught:
        resume_study(study, storage, [*COMMAND, "model.width=2.0"], 3, tmp_path / "sweep2")
    assert "hydra.sweeper.study_name=" in str(caught.value) and caught.value.exit_code == 2


def test_a_second_search_of_the_same_study_is_refused(tmp_path: Path) -> None:
    _, storage = _study(tmp_path)
    with (
        only_search_of(storage, "search"),
        pytest.raises(UserError) as caught,
        only_search_of(storage, "search"),
    ):
        pass
    assert "another search is running study 'search'" in str(caught.value)
    with only_search_of(storage, "search"):  # free again once the first ended
        pass


def test_the_report_covers_every_trial_of_the_study(tmp_path: Path) -> None:
    study, storage = _study(tmp_path)
    for sweep, numbers in (("sweep1", [0, 1]), ("sweep2", [2])):
        resume_study(study, storage, COMMAND, 3, tmp_path / sweep)
        for number in numbers:
            (tmp_path / sweep / str(number) / ".hydra").mkdir(parents=True)
            (tmp_path / sweep / str(number) / ".hydra" / "overrides.yaml").write_text("[]\n")
        study.set_user_attr("interrupted", [1] if sweep == "sweep2" else [])
    jobs = load_jobs(tmp_path / "sweep2")
    assert [job.number for job in jobs] == [0, 1, 2]
    assert jobs[1].status == "interrupted, run again"
    assert load_study_of(tmp_path / "sweep1").study_name == "search"  # type: ignore[union-attr]


def test_directions_as_optuna_names() -> None:
    from hydra_plugins.hydra_optuna_sweeper.config import Direction

    assert directions("maximize") == ["maximize"]
    assert directions(Direction.minimize) == ["minimize"]
    assert directions(["maximize", Direction.minimize]) == ["maximize", "minimize"]
