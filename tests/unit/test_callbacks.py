"""Callbacks, each on its own with a stand-in trainer: stop at a target, channels-last weights,
exact resume, and the pictures written to TensorBoard."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import psutil
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, TensorDataset

from mnist_lit.callbacks.images import SampleBatchImages
from mnist_lit.callbacks.images import TestReportImages as ReportImages  # (not a test to pytest)
from mnist_lit.callbacks.time_left import TimeLeft, duration
from mnist_lit.callbacks.training import (
    ChannelsLast,
    ExactResume,
    StartupTime,
    StepCheckpoint,
    StopAtTarget,
)
from mnist_lit.classifier import LitClassifier

from .conftest import ADAM, TINY_CNN


def stand_in_trainer(loggers: list, global_step: int = 0, **kwargs) -> SimpleNamespace:
    """What the picture callbacks read of a trainer: its loggers, step, data module and
    callbacks (empty unless given)."""
    datamodule = SimpleNamespace(hparams=SimpleNamespace(mean=0.5, std=0.25))
    kwargs.setdefault("callbacks", [])
    return SimpleNamespace(
        loggers=loggers, global_step=global_step, datamodule=datamodule, **kwargs
    )


def tensorboard_tags(logger: TensorBoardLogger) -> dict[str, list[str]]:
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    return events.Tags()


# ----------------------------------------------------------------------------- StopAtTarget


@pytest.mark.parametrize("target", [0.0, 1.5, -0.1])
def test_a_target_that_is_not_an_accuracy_is_refused(target: float) -> None:
    with pytest.raises(ValueError, match=f"stop_at={target}"):
        StopAtTarget(target=target)


def test_no_target_never_stops() -> None:
    callback = StopAtTarget(target=None)
    trainer = SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        callback_metrics={"val/acc": torch.tensor(1.0)},
        should_stop=False,
    )
    callback.on_validation_end(trainer, None)
    assert not trainer.should_stop and not callback.reached


class StepHookCount(L.Callback):
    """Counts the training steps Lightning called it for."""

    def __init__(self) -> None:
        self.steps = 0

    def on_train_batch_start(self, *args: object) -> None:
        self.steps += 1


def test_startup_time_is_taken_once_at_the_first_step(tmp_path: Path) -> None:
    startup, count = StartupTime(), StepHookCount()
    trainer = L.Trainer(
        max_steps=3,
        limit_val_batches=0,
        callbacks=[startup, count],
        logger=TensorBoardLogger(tmp_path, name="tb", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    data = TensorDataset(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,)))
    started = time.time()
    trainer.fit(LitClassifier(net=TINY_CNN, optimizer=ADAM), DataLoader(data, batch_size=2))
    assert count.steps == 3
    assert startup.seconds is not None and startup.seconds > time.time() - started - 60


# ----------------------------------------------------------------------------- StepCheckpoint


@pytest.mark.parametrize(
    ("step", "batch", "saves"),
    [(999, 3, True), (1000, 4, True), (1000, 9, False), (1001, 5, True)],
)
def test_step_checkpoint_leaves_out_the_batch_before_validation(
    step: int, batch: int, saves: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning's ``ModelCheckpoint`` decides at each step whether it is a saving one, except
    on a batch that validation follows (the 10th of 10 here): it is not asked there."""
    asked: list[int] = []
    monkeypatch.setattr(
        ModelCheckpoint, "on_train_batch_end", lambda self, trainer, *args: asked.append(step)
    )
    callback = StepCheckpoint(dirpath=tmp_path, every_n_train_steps=1000)
    trainer = SimpleNamespace(
        global_step=step, num_training_batches=10, val_check_batch=10, enable_validation=True
    )
    callback.on_train_batch_end(trainer, None, None, None, batch)
    assert asked == ([step] if saves else [])


# ----------------------------------------------------------------------------- ChannelsLast


def test_channels_last_puts_the_conv_weights_in_that_layout() -> None:
    model = LitClassifier(net=TINY_CNN, optimizer=ADAM)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # (a 1-channel input conv is channels-last either way: the 4 -> 8 one tells)
    assert not convs[-1].weight.is_contiguous(memory_format=torch.channels_last)
    ChannelsLast().setup(None, model, "fit")
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


# ----------------------------------------------------------------------------- ExactResume


def test_exact_resume_restores_the_random_state_it_saved() -> None:
    saver = ExactResume()
    torch.manual_seed(3)
    state = saver.state_dict()
    expected = torch.rand(5)  # what dropout would draw next in the stopped run
    torch.manual_seed(99)  # a resumed process starts elsewhere

    resumer = ExactResume()
    resumer.load_state_dict(state)
    trainer = SimpleNamespace(train_dataloader=None)
    resumer.on_train_start(trainer, None)
    assert torch.equal(torch.rand(5), expected)
    torch.manual_seed(99)
    resumer.on_train_start(trainer, None)  # once only: a later fit starts afresh
    assert not torch.equal(torch.rand(5), expected)


def test_exact_resume_gives_the_loader_its_saved_position() -> None:
    class Loader:
        state: dict | None = None

        def load_state_dict(self, state: dict) -> None:
            self.state = state

    checkpoint = {
        "loops": {"fit_loop": {"state_dict": {"combined_loader": [{"epoch": 3, "served": 5}]}}}
    }
    callback = ExactResume()
    callback.on_load_checkpoint(None, None, checkpoint)
    loader = Loader()
    callback.on_train_start(SimpleNamespace(train_dataloader=loader), None)
    assert loader.state == {"epoch": 3, "served": 5}


# ----------------------------------------------------------------------------- pictures


def test_sample_batch_is_logged_once_as_pixels(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    callback = SampleBatchImages(count=8)
    images = torch.zeros(16, 1, 28, 28)
    trainer = stand_in_trainer([logger], callbacks=[callback])
    callback.on_train_batch_start(trainer, None, (images, None), 0)
    callback.on_train_batch_start(stand_in_trainer([logger], 1), None, (images, None), 1)
    assert tensorboard_tags(logger)["images"] == ["inputs/train_batch"]


def test_a_resumed_run_logs_no_sample_batch(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    callback = SampleBatchImages(count=8)
    trainer = stand_in_trainer([logger], global_step=500, callbacks=[callback])
    callback.on_train_batch_start(trainer, None, (torch.zeros(16, 1, 28, 28), None), 12)
    assert tensorboard_tags(logger)["images"] == []


def test_pictures_need_a_tensorboard_logger(tmp_path: Path) -> None:
    trainer = stand_in_trainer([CSVLogger(tmp_path)])
    SampleBatchImages().on_train_batch_start(trainer, None, (torch.zeros(2, 1, 28, 28),), 0)
    report = ReportImages()
    report.on_test_epoch_end(trainer, None)
    assert not list(tmp_path.rglob("events.out.tfevents.*"))


def _test_batch(report: ReportImages, trainer, labels: list[int], predicted: list[int]):
    probabilities = torch.full((len(labels), 10), 0.01)
    for row, guess in enumerate(predicted):
        probabilities[row, guess] = 0.5 + 0.01 * row  # later rows: more confident
    images = torch.rand(len(labels), 1, 28, 28)
    batch = (images, torch.tensor(labels))
    report.on_test_batch_end(trainer, None, probabilities, batch, 0)


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")  # the reset one
def test_test_report_keeps_the_most_confident_mistakes(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, name="tb", version="")
    trainer = stand_in_trainer([logger], global_step=7)
    report = ReportImages(worst=2)
    report.on_test_epoch_start(trainer, None)
    _test_batch(report, trainer, labels=[1, 2, 3, 4], predicted=[1, 0, 0, 0])  # 3 mistakes
    report.on_test_batch_end(trainer, None, None, None, 1)  # not probabilities: ignored
    confidence, images, labels, predicted = report.mistakes
    assert labels.tolist() == [4, 3] and predicted.tolist() == [0, 0]
    assert confidence.tolist() == sorted(confidence.tolist(), reverse=True)
    assert images.shape == (2, 1, 28, 28)
    counts = report.confusion.compute()
    assert counts.sum() == 4 and counts[1, 1] == 1 and counts[4, 0] == 1

    report.on_test_epoch_end(trainer, None)
    assert set(tensorboard_tags(logger)["images"]) == {
        "test/confusion_matrix",
        "test/worst_mistakes",
    }
    report.on_test_epoch_start(trainer, None)  # a second test starts afresh
    assert len(report.mistakes[0]) == 0 and report.confusion.compute().sum() == 0


def test_startup_time_is_measured_from_the_process_launch(train_cfg) -> None:
    """From the process's creation to the first training step: more than this test's own run.
    Not a default callback: ``callbacks=[default,startup_time]`` adds it (make bench does)."""
    from mnist_lit.train import train

    cfg = train_cfg("+callbacks.startup_time._target_=mnist_lit.callbacks.training.StartupTime")
    train(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    started = psutil.Process().create_time()
    assert 0 < summary["startup_seconds"] < time.time() - started


# ----------------------------------------------------------------------------- TimeLeft


def test_time_left_is_printed_from_the_measured_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After ``first_after_steps`` steps, then every ``every_seconds`` (0 here: each step), a
    line with the step, the time left and the seconds a step takes; the first also gives the
    whole fit's time."""
    trainer = L.Trainer(
        max_steps=5,
        limit_val_batches=0,
        callbacks=[TimeLeft(every_seconds=0, first_after_steps=3)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    data = TensorDataset(torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,)))
    trainer.fit(LitClassifier(net=TINY_CNN, optimizer=ADAM), DataLoader(data, batch_size=2))
    lines = [line for line in capsys.readouterr().out.splitlines() if "left" in line]
    assert [line.split(":")[0] for line in lines] == [
        "[mnist-lit] step 3/5",
        "[mnist-lit] step 4/5",
        "[mnist-lit] step 5/5",
    ]
    assert "for the whole fit" in lines[0] and "for the whole fit" not in lines[1]
    assert lines[-1].startswith("[mnist-lit] step 5/5: about 0 s left")


@pytest.mark.parametrize(
    ("seconds", "shown"), [(44.6, "45 s"), (200, "3 min 20 s"), (3900, "1 h 05 min")]
)
def test_durations_read_as_a_person_says_them(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown
