"""Writing files so that a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from mnist_lit.errors import UserError


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then rename it to ``path``.

    The file gets mode 0644 (mkstemp makes 0600 files; ours are for everyone to read). On any
    failure the temporary file is removed and ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp_name))
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, flushed to disk before the rename."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)


def unfinished_writes(folder: Path, name: str = "*") -> list[Path]:
    """The temporary files of ``atomic_write`` for ``name`` under ``folder`` (any depth): what a
    writer that was killed leaves behind."""
    return sorted(folder.rglob(f".{name}.*.tmp"))


def checkpoint_file(ckpt_path: str | Path) -> Path:
    """``ckpt_path`` if it is a file; a ``UserError`` with a checkpoint to pass instead if not.

    Answered from the file system alone (no torch), so a wrong path is refused at once.
    """
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


def output_beside(source: str | Path, output: str | None, suffix: str) -> Path:
    """``output``, or ``source`` with ``suffix``: never ``source`` itself (a ``UserError``)."""
    source = Path(source)
    path = Path(output) if output else source.with_suffix(suffix)
    if path.resolve() == source.resolve() or (path.exists() and path.samefile(source)):
        other = source.with_name(f"{source.stem}-exported{suffix}")
        raise UserError(f"output={path} is the input {source} itself: pass output={other}")
    return path
