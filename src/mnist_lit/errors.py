"""Failing without harm: one line for the user, and files that are whole or untouched.

A ``UserError`` is a problem the user can fix; every command ends one as ``error: <message>``
on stderr and its exit code (``reported_errors``):

- ``BAD_INPUT`` (2): a command line, config value, checkpoint or file that cannot be used.
- ``FAILED`` (1): the work ran but did not succeed (the data could not be fetched, ...).
- ``INTERRUPTED`` + the signal's number (130 for Ctrl-C, 143 for SIGTERM): training stopped
  after saving a checkpoint; the line says how to resume.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

BAD_INPUT = 2
FAILED = 1
INTERRUPTED = 128

#: what a full or read-only disk raises, wherever the write was
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


class UserError(Exception):
    """A problem the user can fix, said in one line that names the cause and the fix."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the source text
        self.exit_code = exit_code


@contextmanager
def reported_errors(unstarted_run_dir: str | Path | None = None) -> Iterator[None]:
    """End a ``UserError`` (or a full disk) as one ``error:`` line and its exit code.

    ``unstarted_run_dir``: the run dir Hydra made for this command; a refusal before anything
    was trained removes it again (when it holds no checkpoint and no results).
    """
    try:
        yield
    except UserError as err:
        if unstarted_run_dir is not None and err.exit_code == BAD_INPUT:
            remove_unstarted_run_dir(Path(unstarted_run_dir))
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        # the files Hydra wrote at the start may be empty: a run dir with nothing else goes
        run_dir = unstarted_run_dir or hydra_run_dir()
        if run_dir is not None:
            remove_unstarted_run_dir(Path(run_dir))
        where = f" {err.filename}" if err.filename else ""
        print(
            f"error: cannot write{where}: {err.strerror}: free some space or pass another "
            "folder; a stopped training run goes on with resume=<run dir>",
            file=sys.stderr,
        )
        raise SystemExit(FAILED) from None


#: the run dir of the Hydra run this process started (``RunDirAtStart``), until its job runs
_run_dir_at_start: list[str] = []


class RunDirAtStart(Callback):
    """A Hydra callback (``conf/hydra/default.yaml``): notes the run dir before Hydra writes its
    config files there, so that a full disk in those writes takes the empty files away again
    (``reported_errors``); Hydra tells no one where that dir was once its write failed."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _run_dir_at_start.append(str(config.hydra.run.dir))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        _run_dir_at_start.clear()  # written: from here on main's own handler knows the dir


def hydra_run_dir() -> str | None:
    """The run dir of a Hydra run whose start failed, or None."""
    return _run_dir_at_start[-1] if _run_dir_at_start else None


def remove_unstarted_run_dir(run_dir: Path) -> None:
    """Remove a run dir that holds only what starting wrote into it (``.hydra/``, the log, the
    printed config): a run refused before it trained. Anything else in it (a checkpoint,
    results, a file of yours) keeps it."""
    if not run_dir.is_dir():
        return
    started = (".hydra", "config_tree.txt")  # Hydra's files, and the config train.py printed
    if all(p.name in started or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir, ignore_errors=True)


def require_extra(extra: str, *modules: str) -> None:
    """One line naming the extra to install when a module it brings is missing."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise UserError(
            f"this needs {', '.join(missing)}, from the '{extra}' extra: "
            f"pip install -e '.[{extra}]' (make test installs every extra)"
        )


def checkpoint_file(ckpt_path: str | Path) -> Path:
    """``ckpt_path`` if it is a file; a ``UserError`` with a checkpoint to pass instead if not."""
    path = Path(ckpt_path)
    if path.is_dir():
        found = sorted(path.glob("*.ckpt")) + sorted(path.glob("checkpoints/*.ckpt"))
        last = [p for p in found if p.name == "last.ckpt"]
        suggestion = str((last or found)[0]) if found else f"{path}/<file>.ckpt"
        raise UserError(f"checkpoint {path} is a folder, not a file: pass ckpt_path={suggestion}")
    if not path.is_file():
        raise UserError(
            f"checkpoint {path} does not exist: pass ckpt_path=<run dir>/checkpoints/<file>.ckpt"
        )
    return path


def first_line(err: BaseException, skip: str = "") -> str:
    """An error's first line of text (past a heading that starts with ``skip``)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if skip and len(lines) > 1 and lines[0].startswith(skip):
        lines = lines[1:]
    return lines[0] if lines else type(err).__name__


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``: a
    reader sees the old file or the whole new one, never half of it. On any failure the
    temporary file is removed and ``path`` is left as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; ours are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``data`` written to ``path`` atomically (``atomic_write``), flushed to disk first."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def unfinished_writes(folder: Path, name: str = "*") -> list[Path]:
    """What ``atomic_write_bytes`` leaves under ``folder`` when it is killed mid-write."""
    return sorted(folder.rglob(f".{name}.*.tmp"))
