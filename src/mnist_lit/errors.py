"""The one error type a user sees: a line of text and the exit code it ends the program with.

Every entry point (``train.py``, ``eval.py``, ``predict.py``, ``export.py``, ``python -m
mnist_lit.data``, ``python -m mnist_lit.cluster``) runs inside ``reported_errors`` (through
``mnist_lit.cli.run_entry_point`` for the Hydra ones), which prints a ``UserError`` as
``error: <message>`` and exits with its code. The codes:

- ``BAD_INPUT`` (2): the command line, a config value, a checkpoint or another file the user
  named cannot be used. Nothing was started.
- ``FAILED`` (1): the work ran but did not succeed: some images could not be classified, an
  export does not match PyTorch, the data could not be fetched.
- ``INTERRUPTED`` + the signal's number (130 for Ctrl-C, 143 for SIGTERM), the shell's
  convention: training was stopped; it saved a checkpoint, and the line says how to resume.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager

BAD_INPUT = 2
FAILED = 1
INTERRUPTED = 128


class UserError(Exception):
    """A problem the user can fix, said in one line that names the cause and the fix."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT) -> None:
        super().__init__(" ".join(message.split()))  # one line, whatever the source text
        self.exit_code = exit_code


#: what a full or read-only disk raises, wherever the write was
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


@contextmanager
def reported_errors() -> Iterator[None]:
    """End a ``UserError`` as one ``error: <message>`` line on stderr and its exit code.

    A full or read-only disk is one too (exit code 1): it is the machine, not a bug, and every
    file here is written to a temporary name first, so nothing was left half-written.
    """
    try:
        yield
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        where = f" {err.filename}" if err.filename else ""
        print(
            f"error: cannot write{where}: {err.strerror}: free some space or pass another "
            "folder; a stopped training run goes on with resume=<run dir>",
            file=sys.stderr,
        )
        raise SystemExit(FAILED) from None
