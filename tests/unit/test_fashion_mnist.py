"""Fashion-MNIST's spec and where its files come from (in order, md5-checked), on a tiny fake
data set in local folders: a folder of ``.gz`` files standing for the Debian package and a
``file://`` URL standing for a mirror, fetched by a stand-in for torchvision's ``download_url``
(no network). (Real Fashion-MNIST: integration.)
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.error
import urllib.parse
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import mnist_lit.data.download
from mnist_lit.data import MNIST, MNISTDataModule
from mnist_lit.data.download import DatasetSpec, ensure_dataset
from mnist_lit.data.fashion_mnist import FASHION_MNIST, FashionMNISTDataModule
from mnist_lit.data.wheel import idx_bytes
from mnist_lit.errors import UserError

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
NAMES = tuple(FASHION_MNIST.md5)


@pytest.fixture(autouse=True)
def file_url_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """``download_url`` for ``file://`` URLs only: the unit layer reaches no network."""

    def copy_file_url(url: str, root: str, filename: str) -> None:
        source = Path(urllib.parse.urlparse(url).path)
        if not source.is_file():
            raise urllib.error.URLError(f"{source} not found")
        shutil.copyfile(source, Path(root) / filename)

    monkeypatch.setattr(mnist_lit.data.download, "download_url", copy_file_url)


def md5sum(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- fake data set


@pytest.fixture(scope="module")
def fake_files() -> dict[str, bytes]:
    """Four small IDX files (12 train, 5 test images) shaped like Fashion-MNIST's."""
    rng = np.random.default_rng(7)
    return {
        "train-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, 12, dtype=np.uint8)),
        "t10k-images-idx3-ubyte": idx_bytes(rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte": idx_bytes(rng.integers(0, 10, 5, dtype=np.uint8)),
    }


def fake_spec(files: dict[str, bytes], folder: Path | None, mirrors: tuple[str, ...] = ()):
    """FASHION_MNIST's spec with the fake files' md5s and local sources only."""
    return replace(
        FASHION_MNIST,
        md5={name: hashlib.md5(data).hexdigest() for name, data in files.items()},
        gz_md5={
            name: hashlib.md5(gzip.compress(d, mtime=0)).hexdigest() for name, d in files.items()
        },
        local_gz_dir=str(folder) if folder else None,
        mirrors=mirrors,
    )


def write_gz(folder: Path, files: dict[str, bytes], mtime: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=mtime))


def assert_good(raw_dir: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        assert (raw_dir / name).read_bytes() == data, name
    assert not [p for p in os.listdir(raw_dir) if p.endswith(".tmp")]


# ----------------------------------------------------------------------------- source order


def test_local_gz_folder_is_used_before_mirrors(tmp_path: Path, fake_files) -> None:
    package = tmp_path / "package"
    write_gz(package, fake_files)
    mirror = tmp_path / "mirror"
    write_gz(mirror, {name: b"not these bytes" for name in fake_files})  # would fail the md5
    spec = fake_spec(fake_files, package, mirrors=(mirror.as_uri() + "/",))
    raw_dir = tmp_path / "FashionMNIST" / "raw"
    assert ensure_dataset(spec, raw_dir) == raw_dir
    assert_good(raw_dir, fake_files)


def test_files_already_there_need_no_source(tmp_path: Path, fake_files) -> None:
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for name, data in fake_files.items():
        (raw_dir / name).write_bytes(data)
    spec = fake_spec(fake_files, tmp_path / "no-such-folder")
    ensure_dataset(spec, raw_dir)
    assert_good(raw_dir, fake_files)


def test_repacked_gz_with_the_right_content_is_accepted(tmp_path: Path, fake_files) -> None:
    """Debian's .gz files differ from the official ones (other md5) but hold the same bytes."""
    package = tmp_path / "package"
    write_gz(package, fake_files, mtime=1_591_348_000)
    spec = fake_spec(fake_files, package)
    assert md5sum(package / f"{NAMES[0]}.gz") != spec.gz_md5[NAMES[0]]
    ensure_dataset(spec, tmp_path / "raw")
    assert_good(tmp_path / "raw", fake_files)


@pytest.mark.parametrize("problem", ["missing-folder", "missing-file", "corrupt", "not-gzip"])
def test_bad_local_folder_falls_through_to_the_mirror(
    tmp_path: Path, fake_files, problem: str
) -> None:
    package = tmp_path / "package"
    if problem != "missing-folder":
        write_gz(package, fake_files)
        bad = package / "t10k-images-idx3-ubyte.gz"
        if problem == "missing-file":
            bad.unlink()
        elif problem == "corrupt":
            data = bytearray(fake_files["t10k-images-idx3-ubyte"])
            data[100] ^= 0xFF
            bad.write_bytes(gzip.compress(bytes(data)))
        else:
            bad.write_bytes(fake_files["t10k-images-idx3-ubyte"])
    mirror = tmp_path / "mirror"
    write_gz(mirror, fake_files)
    spec = fake_spec(fake_files, package, mirrors=(mirror.as_uri() + "/",))
    ensure_dataset(spec, tmp_path / "raw")
    assert_good(tmp_path / "raw", fake_files)


def test_every_source_failing_names_the_debian_package(tmp_path: Path, fake_files) -> None:
    spec = fake_spec(fake_files, tmp_path / "absent", mirrors=((tmp_path / "gone").as_uri(),))
    with pytest.raises(UserError) as info:
        ensure_dataset(spec, tmp_path / "raw")
    message = str(info.value)
    assert getattr(info.value, "exit_code", 1) == 1
    assert "\n" not in message
    assert str(tmp_path / "absent") in message  # each source tried, named
    assert "apt-get install dataset-fashion-mnist" in message  # the fix
    assert all(name in message for name in NAMES)
    assert not [p for p in os.listdir(tmp_path / "raw") if not p.startswith(".fetch")]


def test_specs_differ_only_in_data(tmp_path: Path) -> None:
    """A data module is its spec: the folder, md5s, sources and classes all come from it."""
    assert MNISTDataModule.spec is MNIST and FashionMNISTDataModule.spec is FASHION_MNIST
    assert FashionMNISTDataModule(data_dir=str(tmp_path)).raw_dir == tmp_path / "FashionMNIST/raw"
    assert FASHION_MNIST.local_gz_dir == str(DEBIAN_DIR) and FASHION_MNIST.wheel is None
    assert FASHION_MNIST.classes[9] == "Ankle boot" and MNIST.classes[9] == "9"
    assert set(FASHION_MNIST.md5) == set(MNIST.md5)  # the same four IDX names
    assert isinstance(FASHION_MNIST, DatasetSpec)


@pytest.mark.parametrize("kind", ["folder", "device link"])
def test_a_data_file_that_is_not_a_regular_file_is_refused(
    tmp_path: Path, fake_files, kind: str
) -> None:
    """Not read (a device never ends), not replaced (it is the user's): one line names it."""
    raw_dir = tmp_path / "raw"
    raw_dir.mkdir()
    for name, data in fake_files.items():
        (raw_dir / name).write_bytes(data)
    taken = raw_dir / NAMES[0]
    taken.unlink()
    if kind == "folder":
        taken.mkdir()
    else:
        taken.symlink_to("/dev/zero")
    with pytest.raises(UserError) as caught:
        ensure_dataset(fake_spec(fake_files, None), raw_dir)
    assert caught.value.exit_code == 2 and str(taken) in str(caught.value)
