"""``hparams_search=optuna``'s sweeper (``mnist_lit.sweeps.optuna_sweeper``) on Optuna's
ask-and-tell API: the search space from Hydra's override grammar, and whole searches on SQLite
studies in tmp_path, with a stand-in launcher that runs each job as a function (no training)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from mnist_lit.errors import UserError
from mnist_lit.sweeps.optuna_sweeper import ResumableOptunaSweeper
from mnist_lit.sweeps.search_space import search_space
from mnist_lit.sweeps.studies import STUDY_FILE, open_storage

from ..conftest import compose_config

COMMAND = ["hparams_search=optuna", "model=mlp"]
SPACE = [
    "optimizer.lr",
    "optimizer.weight_decay",
    "model.dropout",
    "model.batchnorm",
    "model.width",
]

Objective = Callable[[dict[str, str]], Any]


# ------------------------------------------------------------------------------ the search space


def test_the_override_grammar_maps_to_optuna_distributions() -> None:
    space = search_space(
        [
            "optimizer.lr=tag(log, interval(0.0003, 0.01))",
            "model.dropout=interval(0.0, 0.5)",
            "model.batchnorm=choice(true, false)",
            "model.width=choice(0.5, 1.0, 2.0)",
            "+model.depth=range(2, 8, 2)",
            "+model.blocks=tag(log, range(1, 65))",
            "+model.scale=range(0.5, 2.0, 0.5)",
            "+model.order=shuffle(range(1, 4))",
            "model=mlp",
            "+trainer.limit_train_batches=40",
            "model.dropout=0.2",  # the command line's value wins over params' interval
        ]
    )
    scale = space.distributions.pop("+model.scale")
    order = space.distributions.pop("+model.order")
    assert space.distributions == {
        "optimizer.lr": FloatDistribution(0.0003, 0.01, log=True),
        "model.batchnorm": CategoricalDistribution([True, False]),
        "model.width": CategoricalDistribution([0.5, 1.0, 2.0]),
        "+model.depth": IntDistribution(2, 6, step=2),  # Hydra's range: 2, 4, 6
        "+model.blocks": IntDistribution(1, 64, log=True),
    }
    # a range of floats, and a shuffled range: a choice of the values Hydra's range lists
    assert scale == CategoricalDistribution([0.5, 1.0, 1.5])
    assert isinstance(order, CategoricalDistribution) and sorted(order.choices) == [1, 2, 3]
    assert space.fixed == ["model=mlp", "+trainer.limit_train_batches=40", "model.dropout=0.2"]
    trial = {"optimizer.lr": 0.001, "model.batchnorm": False}
    assert space.overrides(trial) == [
        "optimizer.lr=0.001",
        "model.batchnorm=False",
        "model=mlp",
        "+trainer.limit_train_batches=40",
        "model.dropout=0.2",
    ]


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("optimizer.lr=tag(log, interval(0.0, 0.01))", "optimizer.lr"),
        ("optimizer.lr=tag(loud, interval(0.1, 0.2))", "only the tag 'log'"),
        ("model.width=tag(log, choice(1, 2))", "takes an interval or a range of integers"),
        ("+model.depth=range(5, 1)", "lists no value"),
    ],
)
def test_a_space_optuna_cannot_draw_from_is_one_line(override: str, words: str) -> None:
    with pytest.raises(UserError) as caught:
        search_space([override])
    assert words in str(caught.value) and caught.value.exit_code == 2


# ---------------------------------------------------------------------------------- whole searches


class FunctionLauncher:
    """Hydra's launcher API (``launch(job_overrides, initial_job_idx)``) over a function: each
    job's value is ``objective(its overrides as a dict)``; an exception fails the job, as
    Hydra's launchers report it. Records each batch: (first job number, its overrides)."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.batches: list[tuple[int, list[list[str]]]] = []

    def launch(self, job_overrides: Any, initial_job_idx: int) -> list[JobReturn]:
        self.batches.append((initial_job_idx, [list(o) for o in job_overrides]))
        returns = []
        for overrides in job_overrides:
            ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            try:
                ret.return_value = self.objective(dict(o.split("=", 1) for o in overrides))
            except Exception as err:
                ret.status = JobStatus.FAILED
                ret.return_value = err
            returns.append(ret)
        return returns


def accuracy(params: dict[str, str]) -> float:
    """A made-up val/acc_best that grows with the learning rate."""
    return 0.9 + float(params["optimizer.lr"])


def search(tmp_path: Path, objective: Objective, *overrides: str) -> ResumableOptunaSweeper:
    """The sweeper Hydra builds for ``train.py hparams_search=optuna model=mlp <overrides>``
    (its study in ``tmp_path/optuna``, its sweep dir ``tmp_path/sweep``), jobs run by
    ``objective``."""
    hydra_overrides = [f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides]
    cfg = compose_config("train", [*COMMAND, *hydra_overrides], tmp_path / "run")
    wrapper = Plugins.instance().instantiate_sweeper(
        hydra_context=HydraContext(config_loader=None, callbacks=None),  # type: ignore[arg-type]
        task_function=lambda cfg: None,
        config=cfg,
    )
    sweeper = wrapper.search
    assert isinstance(sweeper, ResumableOptunaSweeper)
    sweeper.launcher = FunctionLauncher(objective)  # type: ignore[assignment]
    return sweeper


def _study(tmp_path: Path) -> optuna.Study:
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna' / 'train_optuna.db'}")
    return optuna.load_study(study_name="train_optuna", storage=storage)


def test_a_search_runs_n_trials_in_batches_of_n_jobs(tmp_path: Path) -> None:
    sweeper = search(tmp_path, accuracy, "hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=2")
    sweeper.sweep(["model=mlp"])
    launcher = sweeper.launcher
    assert isinstance(launcher, FunctionLauncher)
    assert [(first, len(jobs)) for first, jobs in launcher.batches] == [(0, 2), (2, 2), (4, 1)]
    for _, jobs in launcher.batches:
        for job in jobs:
            assert sorted(o.split("=")[0] for o in job) == sorted([*SPACE, "model"])

    study = _study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(t.value for t in study.trials))
    assert set(best["best_params"]) == set(SPACE)
    record = yaml.safe_load((tmp_path / "sweep" / STUDY_FILE).read_text())
    assert record["study_name"] == "train_optuna"


class Killed(BaseException):
    """A kill in the middle of a batch: nothing after it runs (not an ``Exception``)."""


def test_a_killed_batch_is_run_again_with_its_params(tmp_path: Path, capsys) -> None:
    """Killed during its second batch of 2, a 4-trial search goes on when rerun: both trials of
    that batch fail and run again with their params, as jobs numbered as the trials."""
    calls = []

    def killed_at_third_job(params: dict[str, str]) -> float:
        calls.append(params)
        if len(calls) == 3:
            raise Killed
        return accuracy(params)

    overrides = ["hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]
    with pytest.raises(Killed):
        search(tmp_path, killed_at_third_job, *overrides).sweep(["model=mlp"])
    killed = _study(tmp_path).trials[2:]
    assert [t.state for t in killed] == [TrialState.RUNNING] * 2

    again = search(tmp_path, accuracy, *overrides)
    again.sweep(["model=mlp"])
    assert "2 of 4 trials done, 2 to run, trials [2, 3] were interrupted" in capsys.readouterr().out
    study = _study(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2 + ["FAIL"] * 2 + [
        "COMPLETE"
    ] * 2
    assert [t.params for t in study.trials[4:]] == [t.params for t in killed]
    assert isinstance(again.launcher, FunctionLauncher)
    assert [first for first, _ in again.launcher.batches] == [4]


def test_failed_trials_stop_the_search_past_max_failure_rate(tmp_path: Path) -> None:
    """A job that returns no value fails its trial; the search goes on while the share of
    failures in a batch is within max_failure_rate, and stops in one line past it; a job that
    raised stops it with its own error."""
    returns = iter([None, 0.9, 0.91, 0.92])
    sweeper = search(
        tmp_path,
        lambda params: next(returns),
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.max_failure_rate=0.5",
    )
    sweeper.sweep(["model=mlp"])
    assert [t.state.name for t in _study(tmp_path).trials] == ["FAIL"] + ["COMPLETE"] * 3

    strict = search(tmp_path / "strict", lambda params: float("nan"), "hydra.sweeper.n_trials=3")
    with pytest.raises(SystemExit) as ended:
        strict.sweep(["model=mlp"])
    assert ended.value.code == 1
    assert [t.state.name for t in _study(tmp_path / "strict").trials] == ["FAIL"]

    def broken(params: dict[str, str]) -> float:
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(RuntimeError, match="CUDA out of memory"):
        search(tmp_path / "broken", broken, "hydra.sweeper.n_trials=3").sweep(["model=mlp"])


def test_the_failure_line_names_the_trials_and_the_setting(tmp_path: Path, capsys) -> None:
    sweeper = search(tmp_path, lambda params: None, "hydra.sweeper.n_trials=2")
    with pytest.raises(SystemExit):
        sweeper.sweep(["model=mlp"])
    err = capsys.readouterr().err
    assert err.startswith("error: trials 0 (1 of a batch of 1) failed: it returned None")
    assert "hydra.sweeper.max_failure_rate=0.0" in err and err.count("\n") == 1


def test_an_in_memory_search_keeps_nothing(tmp_path: Path) -> None:
    sweeper = search(tmp_path, accuracy, "hydra.sweeper.n_trials=2", "hydra.sweeper.storage=null")
    sweeper.sweep(["model=mlp"])
    assert not (tmp_path / "optuna").exists() and not (tmp_path / "sweep" / STUDY_FILE).exists()
    assert (tmp_path / "sweep" / "optimization_results.yaml").is_file()
