"""The unit layer: no MNIST files, no subprocesses, no network; the whole layer in under a minute.

Data is a small synthetic MNIST-like set written by the project's own IDX writer
(``mnist_lit.data.wheel.idx_bytes``) and read through a ``MNISTDataModule`` subclass whose spec has
the synthetic files' md5s and no source to fetch from. Checkpoints are fitted on it in a second
or crafted with ``torch.save``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import socket
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from mnist_lit.classifier import LitClassifier
from mnist_lit.cli import hydra_refusals, sweep_jobs
from mnist_lit.config import check
from mnist_lit.data import MNIST, MNISTDataModule
from mnist_lit.data.download import DatasetSpec
from mnist_lit.data.wheel import idx_bytes
from mnist_lit.errors import UserError

from ..conftest import QUICK, compose_config

# ----------------------------------------------------------------------------- synthetic data

TRAIN_N, TEST_N, VAL_N = 300, 100, 60


def synthetic_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 uint8 images and labels: class ``k`` is a bright 10x4 bar at one of ten
    places on a dim noisy background, so a small network learns it in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels, strict=True):
        top, left = 3 + 12 * (label // 5), 2 + 5 * (label % 5)
        image[top : top + 10, left : left + 4] = rng.integers(200, 256, (10, 4), dtype=np.uint8)
    return images, labels


def _synthetic_files() -> dict[str, bytes]:
    train_images, train_labels = synthetic_split(TRAIN_N, seed=1)
    test_images, test_labels = synthetic_split(TEST_N, seed=2)
    return {
        "train-images-idx3-ubyte": idx_bytes(train_images),
        "train-labels-idx1-ubyte": idx_bytes(train_labels),
        "t10k-images-idx3-ubyte": idx_bytes(test_images),
        "t10k-labels-idx1-ubyte": idx_bytes(test_labels),
    }


SYNTHETIC_FILES = _synthetic_files()

#: MNIST's spec with the synthetic files' md5s and nowhere to fetch from
SYNTHETIC = dataclasses.replace(
    MNIST,
    name="synthetic",
    title="synthetic MNIST",
    md5={name: hashlib.md5(data).hexdigest() for name, data in SYNTHETIC_FILES.items()},
    gz_md5={},
    mirrors=(),
    wheel=None,
    local_gz_dir=None,
)


class SyntheticDataModule(MNISTDataModule):
    """``MNISTDataModule`` on the synthetic files (``data._target_`` of ``SYNTHETIC_DATA``)."""

    spec: ClassVar[DatasetSpec] = SYNTHETIC
    train_total = TRAIN_N


SYNTHETIC_TARGET = f"{SyntheticDataModule.__module__}.{SyntheticDataModule.__qualname__}"


def synthetic_overrides(data_dir: Path) -> list[str]:
    """Overrides that make a composed config train on the synthetic files in ``data_dir``."""
    return [
        f"data._target_={SYNTHETIC_TARGET}",
        f"data.data_dir={data_dir}",
        f"data.val_size={VAL_N}",
        "data.batch_size=32",
        "data.eval_batch_size=50",
    ]


@pytest.fixture(scope="session")
def synthetic_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the synthetic files where ``SyntheticDataModule`` looks for them."""
    root = tmp_path_factory.mktemp("synthetic-data")
    raw_dir = root / SYNTHETIC.raw_subdir
    raw_dir.mkdir(parents=True)
    for name, data in SYNTHETIC_FILES.items():
        (raw_dir / name).write_bytes(data)
    return root


@pytest.fixture
def synthetic_datamodule(synthetic_data_dir: Path):
    """A factory: ``synthetic_datamodule(**kwargs)`` -> a set-up ``SyntheticDataModule``."""

    def make(**kwargs: Any) -> SyntheticDataModule:
        kwargs = {"val_size": VAL_N, "batch_size": 32, "eval_batch_size": 50, **kwargs}
        datamodule = SyntheticDataModule(data_dir=str(synthetic_data_dir), **kwargs)
        datamodule.prepare_data()
        datamodule.setup("fit")
        return datamodule

    return make


@pytest.fixture
def train_cfg(tmp_path: Path, synthetic_data_dir: Path) -> Iterator:
    """A factory: ``train_cfg(*overrides, run="run")`` -> a quick training config on the
    synthetic data, writing into ``tmp_path / run`` (no pictures: drawing them costs seconds)."""

    def make(*overrides: str, run: str = "run") -> DictConfig:
        quick = [
            *QUICK,
            *synthetic_overrides(synthetic_data_dir),
            "callbacks.sample_batch=null",
            "callbacks.test_images=null",
        ]
        return compose_config("train", [*quick, *overrides], tmp_path / run, synthetic_data_dir)

    yield make
    GlobalHydra.instance().clear()


# ----------------------------------------------------------------------------- checkpoints

#: the network of the checkpoints made here: not the default sizes of conf/model/cnn.yaml
TINY_CNN = {
    "_target_": "mnist_lit.models.cnn.CNN",
    "channels": [4, 8],
    "hidden": 16,
    "dropout": 0.1,
}
#: the overrides that configure TINY_CNN
FITS_TINY = ["model.channels=[4,8]", "model.hidden=16", "model.dropout=0.1"]
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.003}


@pytest.fixture(scope="session")
def tiny_ckpts(tmp_path_factory: pytest.TempPathFactory, synthetic_data_dir: Path) -> dict:
    """Checkpoints of TINY_CNN fitted on 3 synthetic batches, saved as train.py saves them.

    ``synthetic``: as saved (it says it was trained on ``synthetic``); ``full``: the same with
    ``mnist`` as its data set (so the default configs take it); ``weights``: ``full`` saved with
    the weights only; ``run``: the run dir whose ``checkpoints/`` holds ``full``.
    """
    root = tmp_path_factory.mktemp("tiny-ckpts")
    run = root / "run"
    paths = {
        "run": run,
        "synthetic": root / "synthetic.ckpt",
        "full": run / "checkpoints" / "last.ckpt",
        "weights": root / "weights-only.ckpt",
    }
    L.seed_everything(0)
    model = LitClassifier(net=TINY_CNN, optimizer=ADAM)
    datamodule = SyntheticDataModule(
        data_dir=str(synthetic_data_dir), val_size=VAL_N, batch_size=32, eval_batch_size=50
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=3,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(paths["synthetic"])
    paths["full"].parent.mkdir(parents=True)
    edited(paths["synthetic"], paths["full"], lambda c: set_dataset(c, "mnist"))
    trainer.save_checkpoint(paths["weights"], weights_only=True)
    edited(paths["weights"], paths["weights"], lambda c: set_dataset(c, "mnist"))
    return paths


def set_dataset(checkpoint: dict, name: str) -> None:
    checkpoint["datamodule_hyper_parameters"]["dataset"] = name


def edited(source: Path, target: Path, edit) -> Path:
    """Write ``source`` with ``edit(checkpoint_dict)`` applied to ``target``; returns it."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    edit(checkpoint)
    torch.save(checkpoint, target)
    return target


# ----------------------------------------------------------------------------- the checks


def precheck(config_name: str, argv: Sequence[str]) -> list[DictConfig]:
    """What a command checks before its work, in-process: Hydra's refusals of the command line
    (``cli.hydra_refusals``), then each job's values and checkpoint as its entry point checks
    them (train: ``config.check`` and ``checkpoints.check_ckpt_path``; eval: the checkpoint to
    load; the extras: their own ``check_<command>``). Raises the ``UserError`` the command
    would print; returns each job's config."""
    from mnist_lit.checkpoints import check_ckpt_path, checkpoint_problem, dataset_of_config
    from mnist_lit.export import check_export, check_predict
    from mnist_lit.serving import check_serve

    configs = []
    with hydra_refusals(config_name, list(argv)):
        for job in sweep_jobs([a for a in argv if not a.startswith("-")]):
            configs.append(compose_config(config_name, job, Path("/nonexistent/run")))
    for cfg in configs:
        if config_name in ("predict", "export", "serve"):
            {"predict": check_predict, "export": check_export, "serve": check_serve}[config_name](
                cfg
            )
            continue
        check(cfg)
        if config_name == "train":
            check_ckpt_path(cfg)
        elif problem := checkpoint_problem(cfg.ckpt_path, dataset=dataset_of_config(cfg.data)):
            raise UserError(problem)
    return configs


# ----------------------------------------------------------------------------- guards


@pytest.fixture
def mnist_data_dir() -> None:
    pytest.fail("unit tests use no MNIST files: use synthetic_data_dir (or move the test)")


class _Refused:
    def __init__(self, what: str) -> None:
        self.what = what

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError(f"unit tests start no {self.what}: move this test to integration")


@pytest.fixture(autouse=True)
def _no_subprocess_no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # the standard library's own: `platform` runs `uname -p` once and keeps the answer, and
    # loggers (MLflow's) ask it when built; asked here first, no test order decides who pays for it
    platform.processor()
    monkeypatch.setattr(subprocess.Popen, "__init__", _Refused("subprocess"))
    monkeypatch.setattr(socket.socket, "connect", _Refused("network connection"))
    yield
    GlobalHydra.instance().clear()
