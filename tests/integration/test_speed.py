"""The fast / best / speedrun experiments on real MNIST, and the claim of experiment=fast.

(Augmentation: ``tests/unit/test_augment.py``; stopping at a target: ``tests/unit/test_train.py``.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mnist_lit.train import train


def _summary(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


@pytest.mark.parametrize("experiment", ["fast", "best", "speedrun"])
def test_experiments_run(experiment: str, train_cfg) -> None:
    """Each recipe composes and trains (a few batches; speedrun's bf16 runs on the CPU too)."""
    cfg = train_cfg(f"experiment={experiment}", "trainer.max_epochs=1")
    assert train(cfg) is not None
    assert 0.1 < _summary(cfg)["metrics"]["test/acc"] <= 1.0


def test_stop_at_target_on_real_data(train_cfg) -> None:
    """8 batches of the MLP reach 50 % on MNIST: stopped after the first epoch, and timed."""
    cfg = train_cfg("model=mlp", "trainer.max_epochs=4", "stop_at=0.5")
    train(cfg)
    summary = _summary(cfg)
    assert summary["epochs"] == 1
    assert summary["metrics"]["val/acc"] >= 0.5
    assert 0 < summary["metrics"]["time_to_target/seconds"] < summary["fit_seconds"]


@pytest.mark.slow
def test_fast_reaches_99_percent_in_one_epoch(train_cfg) -> None:
    """The claim of conf/experiment/fast.yaml, measured: one full epoch, the full test set."""
    cfg = train_cfg(
        "experiment=fast",
        "trainer.limit_train_batches=1.0",
        "trainer.limit_val_batches=1.0",
        "trainer.limit_test_batches=1.0",
    )
    train(cfg)
    summary = _summary(cfg)
    assert summary["epochs"] == 1
    assert summary["metrics"]["test/acc"] >= 0.99
