"""Optuna searches that survive a kill: the study lives in SQLite, and a rerun goes on with it.

``hparams_search=optuna`` keeps its study in ``logs/optuna/<study name>.db``, outside the
time-stamped sweep dir. Rerunning the same command opens that study: a trial the kill left
RUNNING is marked failed (listed in the study's ``interrupted`` attribute) and its parameters
are queued to run again, and the sweep runs what is left of ``n_trials``, counted over the whole
study. The jobs of every sweep dir of a study are numbered as its trials, and each sweep dir has
an ``optuna_study.yaml`` naming the study, from which ``report.py`` reports every trial of it.

The sweeper is ``optuna_sweeper.ResumableOptunaSweeper``, which Hydra builds through
``hydra_plugins.mnist_lit_sweeper`` (it loads sweepers only from the ``hydra_plugins`` package);
what it does is here. Nothing here imports optuna until a search runs.
"""

from __future__ import annotations

import fcntl
import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mnist_lit.errors import UserError, atomic_write_bytes

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

#: written into each sweep dir of a study: which study, in which storage (read by report.py)
STUDY_FILE = "optuna_study.yaml"
#: study user attributes: the command line that started the study, the trials a kill left
#: running, and every sweep dir it used
COMMAND_ATTR = "command"
INTERRUPTED_ATTR = "interrupted"
SWEEP_DIRS_ATTR = "sweep_dirs"


@dataclass(frozen=True)
class Resumed:
    """What a sweep of a study has left to do."""

    done: int  #: trials that ended (complete, pruned or failed), interrupted ones excepted
    to_run: int  #: trials to run now so that ``done`` reaches ``n_trials``
    first_number: int  #: the number the next trial asked of the study gets
    requeued: list[int]  #: trials a kill left running, whose parameters run again


def directions(direction: Any) -> list[str]:
    """``hydra.sweeper.direction`` (a name, a ``Direction`` or a list of them) as Optuna's names."""
    listed = isinstance(direction, Sequence) and not isinstance(direction, str)
    given = list(direction) if listed else [direction]
    return [str(getattr(d, "name", d)) for d in given]


def sqlite_file(storage: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` storage URL; ``None`` for other storages."""
    prefix = "sqlite:///"
    return Path(storage[len(prefix) :]) if storage.startswith(prefix) else None


def open_storage(storage: str) -> optuna.storages.RDBStorage:
    """The study storage, its SQLite folder created and its schema version recorded.

    Optuna 2.10 (the newest hydra-optuna-sweeper accepts) records the schema version with
    alembic on a connection it never commits; SQLAlchemy 2 rolls that back, and every later open
    fails (``assert version is not None``). An autocommit connection keeps it; afterwards the
    storage opens as usual.
    """
    import optuna

    path = sqlite_file(storage)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size == 0:
            optuna.storages.RDBStorage(storage, engine_kwargs={"isolation_level": "AUTOCOMMIT"})
    return optuna.storages.RDBStorage(storage)


@contextmanager
def only_search_of(storage: str, study_name: str) -> Iterator[None]:
    """Within: no other process runs a search on this SQLite study (a second one is refused).

    Resuming marks the trials left RUNNING as interrupted, which is only true when nothing else
    runs them.
    """
    path = sqlite_file(storage)
    if path is None:  # a database server: the user runs one search per study
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another search is running study {study_name!r} ({path}): wait for it to end,"
                " or start a new study with hydra.sweeper.study_name=<name>"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def resume_study(
    study: optuna.Study, storage: str, command: Sequence[str], n_trials: int, sweep_dir: Path
) -> Resumed:
    """Prepare ``study`` for this sweep: refuse another command's study, requeue the trials a
    kill left running, count what is done, and record ``sweep_dir`` as one of the study's."""
    import optuna
    from optuna.trial import TrialState

    command = sorted(command)
    started_by = study.user_attrs.get(COMMAND_ATTR)
    if started_by is None:
        study.set_user_attr(COMMAND_ATTR, command)
    elif started_by != command:
        raise UserError(
            f"study {study.study_name!r} was started by other overrides"
            f" ({' '.join(started_by) or 'none'}; now: {' '.join(command) or 'none'}): rerun"
            " that command to go on with it, or start a new study with"
            " hydra.sweeper.study_name=<name>"
        )
    requeued = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study.tell(frozen.number, state=TrialState.FAIL)
        with warnings.catch_warnings():  # "experimental" since Optuna 1.2, in 2.10 as in 4.x
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.enqueue_trial(frozen.params)
        requeued.append(frozen.number)
    interrupted = [*interrupted_trials(study), *requeued]
    study.set_user_attr(INTERRUPTED_ATTR, interrupted)
    trials = study.get_trials(deepcopy=False)
    done = sum(1 for t in trials if t.state.is_finished() and t.number not in interrupted)
    waiting = [t.number for t in trials if t.state == TrialState.WAITING]
    first_number = min(waiting) if waiting else len(trials)
    study.set_user_attr(
        SWEEP_DIRS_ATTR, [*study.user_attrs.get(SWEEP_DIRS_ATTR, []), str(sweep_dir)]
    )
    atomic_write_bytes(
        sweep_dir / STUDY_FILE,
        yaml.safe_dump({"study_name": study.study_name, "storage": storage}).encode(),
    )
    return Resumed(done, max(0, n_trials - done), first_number, requeued)


def interrupted_trials(study: optuna.Study) -> list[int]:
    """The numbers of the trials a kill left running (failed, their parameters run again)."""
    return [int(n) for n in study.user_attrs.get(INTERRUPTED_ATTR, [])]


def load_study_of(sweep_dir: Path) -> optuna.Study | None:
    """The study a sweep dir belongs to (its ``optuna_study.yaml``), or ``None``."""
    record_file = sweep_dir / STUDY_FILE
    if not record_file.is_file():
        return None
    import optuna

    record: dict[str, Any] = yaml.safe_load(record_file.read_text())
    try:
        return optuna.load_study(
            study_name=record["study_name"], storage=open_storage(record["storage"])
        )
    except KeyError:
        raise UserError(
            f"{record_file} names study {record.get('study_name')!r}, which"
            f" {record.get('storage')} does not hold: was the database moved or deleted?"
        ) from None


def study_sweep_dirs(study: optuna.Study) -> list[Path]:
    """Every sweep dir that ran trials of ``study``, first first."""
    return [Path(p) for p in study.user_attrs.get(SWEEP_DIRS_ATTR, [])]
