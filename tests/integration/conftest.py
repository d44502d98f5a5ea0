"""The integration layer: real MNIST subsets, the real command lines, DDP, sweeps, export, resume.

Every test under this folder is marked ``integration`` (``-m "not integration"`` leaves it out;
``make test-unit`` runs the other layer alone). ``trained_checkpoint`` trains a small CNN on a
few hundred real MNIST batches once per session, shared by the checkpoint, predict and export
tests.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from mnist_lit.classifier import LitClassifier
from mnist_lit.data import MNISTDataModule

from ..conftest import DATA_DIR, QUICK, compose_config

HERE = Path(__file__).parent


#: a run that is killed and resumed: 2 epochs of 8 batches with dropout (the MLP's), a checkpoint
#: every 3 steps, so 3 and 6 fall inside the first epoch
RESUMABLE_RUN = [
    *QUICK,
    "model=mlp",
    "trainer.max_epochs=2",
    "callbacks.resume_checkpoint.every_n_train_steps=3",
    "callbacks.sample_batch=null",
    "callbacks.test_images=null",
]


def kill_after(process: subprocess.Popen, marker: Path, timeout: float = 240) -> None:
    """SIGKILL the run as soon as ``marker`` (a checkpoint) appears: mid-epoch, mid-write..."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, f"{marker} never appeared"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def train_cfg(tmp_path: Path, mnist_data_dir: Path) -> Iterator:
    """A factory: ``train_cfg(*overrides)`` -> a quick training config writing into tmp_path."""

    def make(*overrides: str) -> DictConfig:
        return compose_config("train", [*QUICK, *overrides], tmp_path / "run", mnist_data_dir)

    yield make
    GlobalHydra.instance().clear()


SMALL_CNN = {
    "_target_": "mnist_lit.models.cnn.CNN",
    "channels": [16, 32],
    "hidden": 64,
    "dropout": 0.1,
    "batchnorm": True,
}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.003}


@functools.cache
def train_small_cnn(path: Path, batches: int, pen_fraction: float = 0.0) -> Path:
    """``SMALL_CNN`` fitted on ``batches`` real MNIST batches of 128, seed 0, saved to ``path``;
    with ``pen_fraction``, each batch gets that many times as many pen-drawn digits
    (``data.pen_digits``)."""
    L.seed_everything(0)
    pen_digits = {"fraction": pen_fraction} if pen_fraction else None
    datamodule = MNISTDataModule(data_dir=str(DATA_DIR), batch_size=128, pen_digits=pen_digits)
    model = LitClassifier(net=SMALL_CNN, optimizer=ADAM)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=path.parent,
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def mnist_ckpt(tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path) -> Path:
    """SMALL_CNN fitted on 300 real MNIST batches of 128, saved with its data module (once)."""
    return train_small_cnn(tmp_path_factory.getbasetemp() / "mnist-small-cnn" / "small.ckpt", 300)
