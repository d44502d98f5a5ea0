"""LitClassifier: built from configs, schedule lengths filled in, metrics, safe checkpoints."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR, StepLR

from mnist_lit.classifier import LitClassifier, _run_length_argument

MLP_CONFIG = {"_target_": "mnist_lit.models.MLP", "hidden_sizes": [32], "dropout": 0.0}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.01}


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (partial(OneCycleLR, max_lr=0.1), "total_steps"),
        (partial(CosineAnnealingLR), "T_max"),
        (partial(CosineAnnealingLR, T_max=7), None),  # set by the config: left alone
        (partial(StepLR, step_size=3), None),  # not a whole-run schedule
    ],
)
def test_run_length_argument(factory, expected: str | None) -> None:
    assert _run_length_argument(factory) == expected


def fit_tiny(
    tmp_path: Path, scheduler: dict | None, epochs: int = 2
) -> tuple[L.Trainer, LitClassifier]:
    """Fit on 8 random batches of 16 so the number of optimizer steps is known: 8 per epoch."""
    torch.manual_seed(0)
    images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=16
    )
    model = LitClassifier(net=MLP_CONFIG, optimizer=ADAM, scheduler=scheduler)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, loader, loader)
    return trainer, model


def test_onecycle_spans_exactly_the_run(tmp_path: Path) -> None:
    onecycle = {
        "_target_": "torch.optim.lr_scheduler.OneCycleLR",
        "_partial_": True,
        "max_lr": 0.01,
    }
    trainer, _ = fit_tiny(tmp_path, onecycle)
    config = trainer.lr_scheduler_configs[0]
    assert config.interval == "step"
    assert config.scheduler.total_steps == 16  # 8 batches x 2 epochs
    assert config.scheduler.last_epoch == 16


def test_step_schedule_steps_per_epoch(tmp_path: Path) -> None:
    step = {
        "_target_": "torch.optim.lr_scheduler.StepLR",
        "_partial_": True,
        "step_size": 1,
        "gamma": 0.5,
    }
    trainer, _ = fit_tiny(tmp_path, step)
    assert trainer.lr_scheduler_configs[0].interval == "epoch"
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.01 * 0.5**2)


def test_val_acc_best_is_the_max_over_epochs(tmp_path: Path) -> None:
    trainer, model = fit_tiny(tmp_path, None, epochs=3)
    assert float(trainer.callback_metrics["val/acc_best"]) == pytest.approx(
        float(model.val_acc_best.compute())
    )
    assert float(trainer.callback_metrics["val/acc_best"]) >= float(
        trainer.callback_metrics["val/acc"]
    )


def test_checkpoint_holds_only_plain_data(tmp_path: Path) -> None:
    """Hyper-parameters are plain dicts: the checkpoint loads with torch's weights_only=True."""
    trainer, model = fit_tiny(tmp_path, None, epochs=1)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["net"] == MLP_CONFIG
    restored = LitClassifier.load_from_checkpoint(path)
    images = torch.randn(4, 1, 28, 28)
    model.eval()
    restored.eval()
    assert torch.equal(model(images), restored(images))


def test_predict_step_returns_probabilities() -> None:
    model = LitClassifier(net=MLP_CONFIG, optimizer=ADAM).eval()
    probabilities = model.predict_step(torch.randn(3, 1, 28, 28), 0)
    assert probabilities.shape == (3, 10)
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(3))
