"""Optuna studies that survive a kill (``mnist_lit.sweeps.studies``), on SQLite files in tmp_path:
no training; trials are asked and told by hand as the sweeper would. And the search's config: its
search space for any model, and the sweeper Hydra builds from it, with or without the extra."""

from __future__ import annotations

import importlib.util
import sqlite3
from pathlib import Path

import optuna
import pytest
import yaml
from hydra.core.plugins import Plugins
from hydra.types import HydraContext
from optuna.trial import TrialState

from mnist_lit.errors import UserError
from mnist_lit.sweeps import studies
from mnist_lit.sweeps.jobs import load_jobs
from mnist_lit.sweeps.studies import (
    STUDY_FILE,
    directions,
    interrupted_trials,
    load_study_of,
    only_search_of,
    open_storage,
    resume_study,
    sqlite_file,
    study_errors,
)

from ..conftest import compose_config

COMMAND = ["hparams_search=optuna", "model=mlp"]
OPTIMIZER_SPACE = ["optimizer.lr", "optimizer.weight_decay"]
MODEL_SPACE = ["model.dropout", "model.batchnorm", "model.width"]


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
    from optuna.study import StudyDirection

    assert directions("maximize") == ["maximize"]
    assert directions(StudyDirection.MINIMIZE) == ["minimize"]
    assert directions(["maximize", StudyDirection.MINIMIZE]) == ["maximize", "minimize"]
    with pytest.raises(UserError) as caught:
        directions("maximise")
    assert "hydra.sweeper.direction=maximise: minimize or maximize" in str(caught.value)


# ------------------------------------------------------------------ a study file Optuna cannot use


def _sqlite_of(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "optuna" / "search.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, f"sqlite:///{path}"


def test_a_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    path, storage = _sqlite_of(tmp_path)
    path.write_text("my notes, not a study\n")
    with pytest.raises(UserError) as caught:
        open_storage(storage)
    line = str(caught.value)
    assert caught.value.exit_code == 2
    assert line.startswith(f"the Optuna study file {path} cannot be read (file is not a database)")
    assert "move it away" in line and "hydra.sweeper.study_name=<name>" in line


def test_a_study_of_an_older_optuna_names_the_upgrade(tmp_path: Path) -> None:
    """A study file hydra-optuna-sweeper's Optuna 2.10 wrote (its schema stamp, v2.6.0.a)."""
    path, storage = _sqlite_of(tmp_path)
    _study(tmp_path)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE alembic_version SET version_num = 'v2.6.0.a'")
    with pytest.raises(UserError) as caught:
        open_storage(storage)
    assert caught.value.exit_code == 2
    assert f"`optuna storage upgrade --storage {storage}`" in str(caught.value)


def test_a_locked_study_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the file's write lock (a sqlite3 shell in a transaction): opening
    it, and a trial's write, fail in one line that says to try again (exit 1)."""
    path, storage = _sqlite_of(tmp_path)
    _study(tmp_path)
    monkeypatch.setattr(studies, "LOCK_WAIT_S", 0.05)  # fail at once, not after 10 s
    study = optuna.load_study(study_name="search", storage=open_storage(storage))
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        for locked_call in (lambda: open_storage(storage), study.ask):
            with pytest.raises(UserError) as caught, study_errors(storage):
                locked_call()
            assert caught.value.exit_code == 1
            assert str(caught.value).startswith(f"the Optuna study file {path} is locked by")
            assert "try again" in str(caught.value)
    finally:
        locker.close()


# ----------------------------------------------------------------------------- the search's config


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_the_search_space_is_the_optimizers_and_the_models(model: str, tmp_path: Path) -> None:
    cfg = compose_config("train", ["hparams_search=optuna", f"model={model}"], tmp_path / "run")
    assert sorted(cfg.hydra.sweeper.params) == sorted(OPTIMIZER_SPACE + MODEL_SPACE)
    assert all(key.split(".", 1)[1] in cfg[key.split(".")[0]] for key in cfg.hydra.sweeper.params)


def test_a_model_without_a_search_space_is_searched_over_the_optimizer(tmp_path: Path) -> None:
    """A model added without conf/hydra/sweeper/params/<model>.yaml, with none of the keys the
    CNN's and MLP's spaces name: the search composes, and names only keys its config has."""
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "tiny.yaml").write_text(
        "_target_: mnist_lit.models.mlp.MLP\nhidden_sizes: [16]\n"
    )
    overrides = [
        "hparams_search=optuna",
        "model=tiny",
        f"hydra.searchpath=[file://{tmp_path}/conf]",
    ]
    cfg = compose_config("train", overrides, tmp_path / "run")
    assert sorted(cfg.hydra.sweeper.params) == OPTIMIZER_SPACE
    assert "batchnorm" not in cfg.model
    # and a model's own space can be left out
    cfg = compose_config("train", [*COMMAND, "~hydra/sweeper/params"], tmp_path / "run")
    assert sorted(cfg.hydra.sweeper.params) == OPTIMIZER_SPACE


def _build_sweeper(cfg):
    """The sweeper as Hydra's multirun builds it: instantiated by Hydra's plugin loader, then set
    up (a stand-in context: the search starts nothing before it sweeps)."""
    return Plugins.instance().instantiate_sweeper(
        hydra_context=HydraContext(config_loader=None, callbacks=None),  # type: ignore[arg-type]
        task_function=lambda cfg: None,
        config=cfg,
    )


def test_the_search_is_built_when_it_starts(tmp_path: Path) -> None:
    from mnist_lit.sweeps.optuna_sweeper import ResumableOptunaSweeper

    cfg = compose_config("train", COMMAND, tmp_path / "run")
    sweeper = _build_sweeper(cfg)
    search = sweeper.search
    assert isinstance(search, ResumableOptunaSweeper)
    assert isinstance(search.sampler, optuna.samplers.TPESampler)
    assert search.sampler_config.n_startup_trials == 5  # the project's sampler settings
    assert (search.n_trials, search.n_jobs, search.direction) == (20, 1, "maximize")
    assert search.study_name == "train_optuna"
    assert sorted(search.params) == sorted(OPTIMIZER_SPACE + MODEL_SPACE)


def test_without_the_sweeps_extra_a_search_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without optuna: the command composes all the same, Hydra builds the sweeper without
    building the Optuna sampler, and the sweeper's setup, before any job, refuses in one line
    that names the extra."""
    Plugins.instance()  # Hydra's plugin scan, done before the extra is taken away
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else find_spec(name)
    )
    overrides = [*COMMAND, "hydra.sweeper.sampler._target_=not_installed.Sampler"]
    cfg = compose_config("train", overrides, tmp_path / "run")
    with pytest.raises(UserError) as caught:
        _build_sweeper(cfg)
    line = str(caught.value)
    assert caught.value.exit_code == 2
    assert "this needs optuna, from the 'sweeps' extra" in line
    assert "pip install -e '.[sweeps]'" in line
