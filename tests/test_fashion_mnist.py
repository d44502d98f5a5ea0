"""Fashion-MNIST: where its files come from (in order, md5-checked) and ``data=fashion_mnist``.

The source-order tests use a tiny fake data set in local folders: a folder of ``.gz`` files
standing for the Debian package and a ``file://`` URL standing for a mirror (no network). The
real-data tests read Debian's ``dataset-fashion-mnist`` and skip when it is not installed.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torchvision.datasets.mnist import read_image_file

from mnist_lit import predict as predict_module
from mnist_lit.data import FASHION_MNIST, FashionMNISTDataModule, MNISTDataModule
from mnist_lit.data.preprocess import preprocess
from mnist_lit.data.sources import (
    MNIST,
    DataFetchError,
    DatasetSpec,
    ensure_dataset,
    idx_bytes,
    main,
    md5sum,
)
from mnist_lit.predict import predict
from mnist_lit.train import train

from .conftest import DATA_DIR, QUICK, compose_config

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_debian_package = pytest.mark.skipif(
    not DEBIAN_DIR.is_dir(),
    reason=f"{DEBIAN_DIR} is absent: apt-get install dataset-fashion-mnist to run this test",
)
NAMES = tuple(FASHION_MNIST.md5)


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
    with pytest.raises(DataFetchError) as info:
        ensure_dataset(spec, tmp_path / "raw")
    message = str(info.value)
    assert "\n" not in message
    assert f"{tmp_path / 'absent'} (not there: apt-get install dataset-fashion-mnist)" in message
    assert "or apt-get install dataset-fashion-mnist, or copy" in message
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


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def fashion_data_dir() -> Path:
    """Real Fashion-MNIST in data/FashionMNIST/raw, from the Debian package (else skip)."""
    if not DEBIAN_DIR.is_dir():
        pytest.skip(f"{DEBIAN_DIR} is absent: apt-get install dataset-fashion-mnist")
    ensure_dataset(FASHION_MNIST, DATA_DIR / FASHION_MNIST.raw_subdir)
    return DATA_DIR


@needs_debian_package
def test_debian_package_gives_the_official_files(tmp_path: Path, capsys) -> None:
    assert main(["--data-dir", str(tmp_path), "--dataset", "fashion_mnist"]) == 0
    assert "Fashion-MNIST is ready" in capsys.readouterr().out
    for name, md5 in FASHION_MNIST.md5.items():
        assert md5sum(tmp_path / "FashionMNIST" / "raw" / name) == md5


def test_config_mean_and_std_are_the_training_sets(fashion_data_dir: Path, tmp_path: Path) -> None:
    cfg = compose_config("train", ["data=fashion_mnist"], tmp_path, fashion_data_dir)
    datamodule = instantiate(cfg.data)
    assert isinstance(datamodule, FashionMNISTDataModule)
    datamodule.setup("fit")
    images = torch.cat([datamodule.splits["train"][0], datamodule.splits["val"][0]]).double()
    assert images.div(255).mean().item() == pytest.approx(cfg.data.mean, abs=1e-4)
    assert images.div(255).std().item() == pytest.approx(cfg.data.std, abs=1e-4)
    sizes = {split: len(x) for split, (x, _) in datamodule.splits.items()}
    assert sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert datamodule.hparams.dataset == "fashion_mnist"
    batch, labels = next(iter(datamodule.train_dataloader()))
    assert abs(batch.mean().item()) < 0.1 and abs(batch.std().item() - 1) < 0.1
    assert set(labels.tolist()) <= set(range(10))


def test_training_and_predicting_by_config(
    fashion_data_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``data=fashion_mnist`` trains with the same code; its checkpoint says which data set, and
    predict names the classes and fills the 28 px box Fashion-MNIST's products fill."""
    cfg = compose_config(
        "train",
        [*QUICK, "data=fashion_mnist", "model=mlp", "trainer.limit_train_batches=30"],
        tmp_path / "run",
        fashion_data_dir,
    )
    assert train(cfg) > 0.4  # val accuracy after 30 batches; chance is 0.1
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(ckpt, weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"]["dataset"] == "fashion_mnist"
    assert checkpoint["datamodule_hyper_parameters"]["mean"] == pytest.approx(0.2860)

    # two test products as photos: dark on a white page, larger than 28 px
    images = read_image_file(str(fashion_data_dir / "FashionMNIST/raw/t10k-images-idx3-ubyte"))
    for i in range(2):
        page = np.full((120, 100), 255, dtype=np.uint8)
        product = Image.fromarray(images[i].numpy()).resize((84, 84), Image.BILINEAR)
        page[18:102, 8:92] = 255 - np.asarray(product)
        Image.fromarray(page).save(tmp_path / f"product_{i}.png")
    boxes = []

    def recording_preprocess(*args, **kwargs):
        boxes.append(kwargs["box_size"])
        return preprocess(*args, **kwargs)

    monkeypatch.setattr(predict_module, "preprocess", recording_preprocess)
    capsys.readouterr()
    predict_cfg = compose_config(
        "predict",
        [f"ckpt_path={ckpt}", f"images={tmp_path}", "data=fashion_mnist"],
        tmp_path / "predict",
        fashion_data_dir,
    )
    assert predict(predict_cfg) == 0
    assert boxes == [28, 28]  # Fashion-MNIST's own box, not MNIST's 20
    table = capsys.readouterr().out
    assert "product_0.png" in table and "product_1.png" in table
    assert any(name in table for name in FASHION_MNIST.classes if not name.isdigit())

    wrong = compose_config(
        "predict", [f"ckpt_path={ckpt}", f"images={tmp_path}"], tmp_path / "p2", fashion_data_dir
    )
    # found by the config check, before any work: one line, exit 2
    with pytest.raises(SystemExit, match="2"):
        predict(wrong)
    assert "trained on fashion_mnist, but data=mnist" in capsys.readouterr().err
