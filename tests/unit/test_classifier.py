"""LitClassifier: built from configs, schedule lengths filled in, metrics, safe checkpoints, and
what it checks when a fit resumes (on random tensors: no data set)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, OneCycleLR, StepLR

from mnist_lit.classifier import LitClassifier, _run_length_argument, _schedule_mismatch
from mnist_lit.errors import UserError

MLP_CONFIG = {"_target_": "mnist_lit.models.mlp.MLP", "hidden_sizes": [32], "dropout": 0.0}
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
    tmp_path: Path, scheduler: dict | None, epochs: int = 2, ckpt_path: Path | None = None
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
    trainer.fit(model, loader, loader, ckpt_path=ckpt_path)
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


def test_label_smoothing_softens_the_training_loss_only() -> None:
    torch.manual_seed(0)
    images, labels = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    model = LitClassifier(net=MLP_CONFIG, optimizer=ADAM, label_smoothing=0.1).eval()
    logits = model(images)
    smoothed = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=0.1)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert not torch.isclose(smoothed, plain)
    assert torch.isclose(model.training_step((images, labels), 0), smoothed)
    model.validation_step((images, labels), 0)
    assert torch.isclose(model.val_loss.compute(), plain)


# ----------------------------------------------------------------------------- resuming a schedule


@pytest.mark.parametrize(
    "saved, planned, problem",
    [
        ([], [], None),
        ([{"total_steps": 100, "last_epoch": 5}], [], None),  # scheduler=none: fixed lr
        ([], ["onecycle"], "without an LR schedule"),
        ([{"T_max": 100}], ["onecycle"], "OneCycleLR"),
        ([{"total_steps": 100}], ["onecycle"], "100 steps"),
        ([{"total_steps": 200}], ["onecycle"], None),
    ],
)
def test_schedule_mismatch(saved: list, planned: list, problem: str | None) -> None:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedulers = [OneCycleLR(optimizer, max_lr=0.1, total_steps=200) for _ in planned]
    if saved and saved[0].keys() <= {"total_steps"} and schedulers:  # the full state but length
        saved = [{**schedulers[0].state_dict(), **saved[0]}]
    found = _schedule_mismatch(saved, schedulers, batches_per_epoch=10)
    assert found == problem if problem is None else problem in found


ONECYCLE = {"_target_": "torch.optim.lr_scheduler.OneCycleLR", "_partial_": True, "max_lr": 0.01}


def test_resuming_a_one_cycle_planned_for_another_length_stops_at_the_start(
    tmp_path: Path,
) -> None:
    trainer, _ = fit_tiny(tmp_path, ONECYCLE, epochs=1)
    path = tmp_path / "one-epoch.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(UserError) as caught:
        fit_tiny(tmp_path, ONECYCLE, epochs=3, ckpt_path=path)
    assert caught.value.exit_code == 2
    assert "OneCycleLR" in str(caught.value) and "scheduler=none" in str(caught.value)


def test_resuming_without_a_schedule_trains_at_the_configs_lr(tmp_path: Path) -> None:
    trainer, _ = fit_tiny(tmp_path, ONECYCLE, epochs=1)
    path = tmp_path / "one-epoch.ckpt"
    trainer.save_checkpoint(path)
    assert trainer.optimizers[0].param_groups[0]["lr"] < 1e-3  # where the one-cycle ended
    resumed, _ = fit_tiny(tmp_path, None, epochs=2, ckpt_path=path)
    group = resumed.optimizers[0].param_groups[0]
    assert group["lr"] == ADAM["lr"]
    assert "max_lr" not in group and "initial_lr" not in group  # what the schedule added
