"""Real Fashion-MNIST (Debian's ``dataset-fashion-mnist``; skipped when it is not installed):
the official files, the config's mean and std, and ``data=fashion_mnist`` training and predicting.

(Its spec and source order on fake files: tests/unit/test_fashion_mnist.py.)
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torchvision.datasets.mnist import read_image_file

from mnist_lit.config import PROJECT_ROOT
from mnist_lit.data.download import VERIFIED_NAME, ensure_dataset
from mnist_lit.data.fashion_mnist import FASHION_MNIST, FashionMNISTDataModule
from mnist_lit.errors import UserError
from mnist_lit.export import predict as predict_module
from mnist_lit.export.predict import predict
from mnist_lit.train import train

from ..conftest import DATA_DIR, QUICK, compose_config

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_debian_package = pytest.mark.skipif(
    not DEBIAN_DIR.is_dir(),
    reason=f"{DEBIAN_DIR} is absent: apt-get install dataset-fashion-mnist to run this test",
)


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def fashion_data_dir() -> Path:
    """Real Fashion-MNIST in data/FashionMNIST/raw, from the Debian package (else skip)."""
    if not DEBIAN_DIR.is_dir():
        pytest.skip(f"{DEBIAN_DIR} is absent: apt-get install dataset-fashion-mnist")
    ensure_dataset(FASHION_MNIST, DATA_DIR / FASHION_MNIST.raw_subdir)
    return DATA_DIR


@needs_debian_package
def test_debian_package_gives_the_official_files(tmp_path: Path) -> None:
    """``python -m mnist_lit.data --dataset fashion_mnist`` from the package's files."""
    command = ["-m", "mnist_lit.data", "--data-dir", str(tmp_path), "--dataset", "fashion_mnist"]
    result = subprocess.run(
        [sys.executable, *command],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Fashion-MNIST is ready" in result.stdout
    raw_dir = tmp_path / "FashionMNIST" / "raw"
    for name, md5 in FASHION_MNIST.md5.items():
        assert hashlib.md5((raw_dir / name).read_bytes()).hexdigest() == md5
        # Debian's .gz files are repacked: the content's md5s are what let them be taken
        package_gz = (DEBIAN_DIR / f"{name}.gz").read_bytes()
        assert hashlib.md5(package_gz).hexdigest() != FASHION_MNIST.gz_md5[name]
    assert f"got {FASHION_MNIST.files[0]} from {DEBIAN_DIR}" in result.stderr
    assert json.loads((raw_dir / VERIFIED_NAME).read_text()) == FASHION_MNIST.md5


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
    real_load = predict_module.load_predictor

    def recording_load(*args, **kwargs):
        predictor = real_load(*args, **kwargs)
        boxes.append(predictor.box_size)
        return predictor

    monkeypatch.setattr(predict_module, "load_predictor", recording_load)
    capsys.readouterr()
    predict_cfg = compose_config(
        "predict",
        [f"ckpt_path={ckpt}", f"images={tmp_path}", "data=fashion_mnist"],
        tmp_path / "predict",
        fashion_data_dir,
    )
    assert len(predict(predict_cfg)) == 2
    assert boxes == [28]  # Fashion-MNIST's own box, not MNIST's 20
    table = capsys.readouterr().out
    assert "product_0.png" in table and "product_1.png" in table
    assert any(name in table for name in FASHION_MNIST.classes if not name.isdigit())

    wrong = compose_config(
        "predict", [f"ckpt_path={ckpt}", f"images={tmp_path}"], tmp_path / "p2", fashion_data_dir
    )
    with pytest.raises(UserError) as caught:  # another data set than the checkpoint's
        predict(wrong)
    assert caught.value.exit_code == 2 and "data=fashion_mnist" in str(caught.value)
