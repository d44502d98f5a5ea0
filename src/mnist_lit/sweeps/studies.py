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
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import yaml

from mnist_lit.errors import FAILED, UserError, atomic_write_bytes, first_line

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
#: seconds a study call waits for another process's lock on the SQLite file
LOCK_WAIT_S = 10.0


@dataclass(frozen=True)
class Resumed:
    """What a sweep of a study has left to do."""

    done: int  #: trials that ended (complete, pruned or failed), interrupted ones excepted
    to_run: int  #: trials to run now so that ``done`` reaches ``n_trials``
    first_number: int  #: the number the next trial asked of the study gets
    requeued: list[int]  #: trials a kill left running, whose parameters run again


def directions(direction: Any) -> list[Literal["minimize", "maximize"]]:
    """``hydra.sweeper.direction`` (a name, an enum of Optuna's or a list of them) as Optuna's
    names."""
    listed = isinstance(direction, Sequence) and not isinstance(direction, str)
    names = [str(getattr(d, "name", d)).lower() for d in (direction if listed else [direction])]
    wrong = [name for name in names if name not in ("minimize", "maximize")]
    if wrong or not names:
        raise UserError(
            f"hydra.sweeper.direction={direction}: minimize or maximize, or a list of them (one"
            " per objective)"
        )
    return cast(list[Literal["minimize", "maximize"]], names)


def sqlite_file(storage: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` storage URL; ``None`` for other storages."""
    prefix = "sqlite:///"
    return Path(storage[len(prefix) :]) if storage.startswith(prefix) else None


def open_storage(storage: str) -> optuna.storages.RDBStorage:
    """The study storage, its SQLite folder created; a file Optuna cannot use is one line
    (``study_errors``)."""
    import optuna

    path = sqlite_file(storage)
    engine_kwargs: dict[str, Any] = {}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # how long a call waits for another process's write (the dashboard's notes, a sqlite3
        # shell) before it fails as locked
        engine_kwargs["connect_args"] = {"timeout": LOCK_WAIT_S}
    with study_errors(storage):
        return optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs)


@contextmanager
def study_errors(storage: str) -> Iterator[None]:
    """Within: a study storage Optuna cannot open or write is a ``UserError`` of one line that
    names the file and the fix, not SQLAlchemy's and Optuna's 80-200 lines.

    A file that is not a database (or a damaged one) is ``BAD_INPUT``: move it away or use another
    study; one written by Optuna < 3 (hydra-optuna-sweeper's) names Optuna's upgrade command; a
    locked one is ``FAILED``: try again.
    """
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    path = sqlite_file(storage)
    where = f"the Optuna study file {path}" if path is not None else f"the Optuna storage {storage}"
    elsewhere = (
        "pick another study with hydra.sweeper.study_name=<name> (or"
        " hydra.sweeper.storage=sqlite:///<file>.db)"
    )
    try:
        yield
    except (SQLAlchemyError, StorageInternalError) as err:
        reason = _database_reason(err)
        if "locked" in reason:
            raise UserError(
                f"{where} is locked by another process (a long write of a dashboard or a"
                " sqlite3 shell): try again once it is done",
                exit_code=FAILED,
            ) from None
        if path is None:
            raise UserError(
                f"{where} failed ({reason}): check hydra.sweeper.storage", exit_code=FAILED
            ) from None
        raise UserError(
            f"{where} cannot be read ({reason}): move it away to start the study anew, or"
            f" {elsewhere}"
        ) from None
    except RuntimeError as err:
        if "optuna storage upgrade" not in str(err):
            raise
        raise UserError(
            f"{where} was written by an older Optuna ({first_line(err).split('. ')[0]}): upgrade"
            f" it once with `optuna storage upgrade --storage {storage}` (Optuna < 3 cannot read"
            f" it afterwards), or {elsewhere}"
        ) from None


def _database_reason(err: BaseException) -> str:
    """The database's own words in an error SQLAlchemy (or Optuna around it) raised."""
    from sqlalchemy.exc import SQLAlchemyError

    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, SQLAlchemyError):
        cause = cause.__cause__ or cause.__context__
    text = first_line(cause or err)
    return text.split(") ", 1)[1] if text.startswith("(") and ") " in text else text


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
        with study_errors(record["storage"]):
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
