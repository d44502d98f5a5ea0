"""``train`` in-process on the synthetic data: a few batches in a second or two per run.

What a run leaves (checkpoints, metrics.json, the summary line), stopping at a target, the same
seed giving the same weights, and a fit resumed mid-epoch ending where the straight one does.
(Real MNIST, TensorBoard's contents, eval and the real command line: integration/test_train.py.)
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.train import train


def _summary(cfg) -> dict:
    return json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def read_scalars(tensorboard_dir: Path) -> dict[str, list[float]]:
    """Scalars as TensorBoard's own reader sees them."""
    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_fast_dev_run(model: str, train_cfg) -> None:
    cfg = train_cfg(f"model={model}", "debug=fast_dev_run")
    assert train(cfg) is not None


def test_a_run_leaves_its_checkpoints_summary_and_one_line(train_cfg, capsys) -> None:
    cfg = train_cfg("trainer.max_epochs=2", "model=mlp", "logger=csv")
    value = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and any(c.startswith("epoch_") for c in checkpoints)
    assert "model:" in (run_dir / "config_tree.txt").read_text()  # the resolved config, as printed

    summary = _summary(cfg)
    assert summary["metrics"]["val/acc_best"] == pytest.approx(value)
    assert 0.0 <= summary["metrics"]["test/acc"] <= 1.0
    assert summary["epochs"] == 2 and summary["fit_seconds"] > 0 and summary["seed"] == cfg.seed
    assert Path(summary["best_ckpt"]).name.startswith("epoch_")
    assert "model=mlp" in summary["overrides"]

    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[mnist-lit]")]
    assert len(lines) == 1
    assert re.search(r"model=mlp test/acc=\S+ val/acc_best=\S+ best_ckpt=\S+", lines[0])

    # the CSV logger got one row per epoch and the final metrics
    metrics_csv = (run_dir / "csv" / "metrics.csv").read_text()
    assert "val/acc" in metrics_csv and "hp/test_acc" in metrics_csv
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["datamodule_hyper_parameters"]["dataset"] == "synthetic"


def test_an_untested_run_prints_no_test_accuracy(train_cfg, capsys) -> None:
    """``test=false`` (every Optuna trial): the summary line leaves test/acc out, not nan."""
    train(train_cfg("model=mlp", "test=false"))
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[mnist-lit]")]
    assert re.match(r"\[mnist-lit\] model=mlp val/acc_best=[\d.]+ best_ckpt=", line), line


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine", "step", "none"])
def test_every_scheduler_trains(scheduler: str, train_cfg) -> None:
    cfg = train_cfg(f"scheduler={scheduler}", "model=mlp", "trainer.max_epochs=2", "test=false")
    train(cfg)
    lrs = read_scalars(Path(cfg.paths.output_dir) / "tensorboard")["lr-Adam"]
    peak = cfg.optimizer.lr
    if scheduler == "none":
        assert lrs == [pytest.approx(peak)] * len(lrs)
    elif scheduler == "step":
        assert lrs[0] == pytest.approx(peak)  # step_size is 3 epochs: unchanged in 2
    else:
        assert lrs[-1] < 0.5 * max(lrs)  # spans the run: well down by the last step


def test_stop_at_target_stops_and_says_when(train_cfg) -> None:
    cfg = train_cfg("model=mlp", "trainer.max_epochs=4", "stop_at=0.3")
    train(cfg)
    summary = _summary(cfg)
    assert summary["epochs"] == 1  # the bars are learned in 8 batches: stopped after epoch 0
    metrics = summary["metrics"]
    assert metrics["val/acc"] >= 0.3
    assert 0 < metrics["time_to_target/seconds"] < summary["fit_seconds"]
    assert metrics["time_to_target/epochs"] == pytest.approx(1.0)  # 8 of 8 batches
    assert metrics["time_to_target/steps"] == 8


def test_unreached_target_trains_every_epoch(train_cfg) -> None:
    # an lr too small to learn anything: val/acc stays near chance
    cfg = train_cfg(
        "model=mlp", "trainer.max_epochs=2", "stop_at=0.9", "optimizer.lr=1e-9", "test=false"
    )
    train(cfg)
    summary = _summary(cfg)
    assert summary["epochs"] == 2
    assert "time_to_target/seconds" not in summary["metrics"]
    assert "test/acc" not in summary["metrics"]  # test=false


def test_same_seed_same_weights_other_seed_other_weights(train_cfg) -> None:
    weights = {}
    for run, seed in (("a", 1), ("b", 1), ("c", 2)):
        cfg = train_cfg("model=mlp", "model.dropout=0.3", f"seed={seed}", "test=false", run=run)
        train(cfg)
        weights[run] = _weights(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
    assert all(torch.equal(weights["a"][k], weights["b"][k]) for k in weights["a"])
    assert not all(torch.equal(weights["a"][k], weights["c"][k]) for k in weights["a"])


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # resumed into another run dir
def test_a_fit_resumed_mid_epoch_ends_with_the_straight_runs_weights(train_cfg) -> None:
    """From a checkpoint taken mid-epoch: the same batches, augmentation, dropout masks and
    schedule after it (``callbacks.ExactResume``, the resumable batches), so the same weights
    and metrics as the run that was never stopped."""
    run = [
        "model=mlp",
        "model.dropout=0.3",
        "trainer.max_epochs=2",
        "callbacks.resume_checkpoint.every_n_train_steps=5",
        "data.augment={shift:2}",
    ]
    straight = train_cfg(*run, run="straight")
    train(straight)
    straight_dir = Path(straight.paths.output_dir)
    # steps 5, 10 and 15 of 16 were saved, the two newest kept: step 10 is batch 2 of epoch 1
    copy = straight_dir.parent / "step_0000010.ckpt"
    shutil.copyfile(straight_dir / "checkpoints" / "resume" / "step_0000010.ckpt", copy)

    resumed = train_cfg(*run, f"ckpt_path={copy}", run="resumed")
    train(resumed)
    resumed_dir = Path(resumed.paths.output_dir)
    step_15 = Path("checkpoints") / "resume" / "step_0000015.ckpt"
    want, got = _weights(straight_dir / step_15), _weights(resumed_dir / step_15)
    assert want.keys() == got.keys()
    for name, tensor in want.items():
        assert torch.equal(tensor, got[name]), name
    assert _summary(resumed)["metrics"] == _summary(straight)["metrics"]


def test_last_ckpt_holds_the_last_epoch(train_cfg) -> None:
    """val/acc reaches 1.0 on the synthetic bars in epoch 0 and stays there in epoch 1."""
    cfg = train_cfg("model=mlp", "trainer.max_epochs=2", "test=false")
    train(cfg)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 16  # 2 epochs of 8 batches


@pytest.mark.parametrize(
    ("when", "options"),
    [
        ("killed during its test", ()),
        ("finished", ()),
        # validation inside the epoch, as experiment=speedrun has it, and the start-up figure
        ("finished", ("trainer.val_check_interval=4", "callbacks=[default,startup_time]")),
    ],
)
def test_resuming_after_the_fit_ended_keeps_its_results(
    when: str, options: tuple[str, ...], train_cfg
) -> None:
    """It fits nothing more and tests again: metrics.json holds the val, train and lr figures
    and the fit and start-up times the fit measured (kept in fit_metrics.json), and the same test
    results."""
    cfg = train_cfg("model=mlp", "trainer.max_epochs=2", *options)
    train(cfg)
    finished = _summary(cfg)
    assert any(k.startswith("val/") for k in finished["metrics"])
    if when == "killed during its test":  # no results yet: metrics.json is written last
        (Path(cfg.paths.output_dir) / "metrics.json").unlink()
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    again = train_cfg("model=mlp", "trainer.max_epochs=2", *options, f"ckpt_path={last}")
    train(again)
    resumed = _summary(again)
    assert resumed["metrics"] == finished["metrics"]
    assert resumed["fit_seconds"] == finished["fit_seconds"]
    assert resumed["startup_seconds"] == finished["startup_seconds"]
    if "callbacks=[default,startup_time]" in options:
        assert finished["startup_seconds"] > 0


def test_a_run_killed_during_validation_resumes_with_that_validation(train_cfg) -> None:
    """No step checkpoint is saved on a batch that validation follows (Lightning would resume it
    as if that validation had run): killed during epoch 0's validation, the run goes on from the
    step before, validates epoch 0 and ends with the uninterrupted numbers."""
    run = [
        "model=mlp",
        "model.dropout=0.3",
        "trainer.max_epochs=2",
        "callbacks.resume_checkpoint.every_n_train_steps=4",
        "callbacks.resume_checkpoint.save_top_k=-1",
    ]
    straight = train_cfg(*run, run="straight")
    train(straight)
    straight_dir = Path(straight.paths.output_dir)
    saved = sorted(p.name for p in (straight_dir / "checkpoints" / "resume").iterdir())
    assert saved == ["step_0000004.ckpt", "step_0000012.ckpt"]  # not 8 and 16: epochs' last

    # the newest checkpoint of a run killed during epoch 0's validation
    killed_at = straight_dir.parent / "step_0000004.ckpt"
    shutil.copyfile(straight_dir / "checkpoints" / "resume" / "step_0000004.ckpt", killed_at)
    resumed = train_cfg(*run, f"ckpt_path={killed_at}", run="resumed")
    train(resumed)
    resumed_dir = Path(resumed.paths.output_dir)
    assert len(read_scalars(resumed_dir / "tensorboard")["val/acc"]) == 2  # epochs 0 and 1
    assert _summary(resumed)["metrics"] == _summary(straight)["metrics"]
    assert Path(_summary(resumed)["best_ckpt"]).name == Path(_summary(straight)["best_ckpt"]).name


def test_max_steps_before_the_first_validation_ends_the_run(train_cfg) -> None:
    """Early stopping (in the default callbacks) judges after validations only: a run that
    max_steps ends before any validation finishes, tested, with no val metrics."""
    cfg = train_cfg("model=mlp", "trainer.max_epochs=2", "+trainer.max_steps=3")
    assert "early_stopping" in cfg.callbacks
    train(cfg)
    summary = _summary(cfg)
    assert not any(k.startswith("val/") for k in summary["metrics"])
    assert "test/acc" in summary["metrics"] and summary["best_ckpt"] == ""
