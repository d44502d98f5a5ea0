"""Part 3 of ``make bench``: training seconds to 99.0 % test accuracy, the pytorch/examples
recipe against ``experiment=fast``; the clock runs only while training (benchmarks/README.md)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from pipelines import (
    EXAMPLES_SEED,
    NO_PROGRESS_BAR,
    compose_config,
    examples_dataset,
    examples_loader,
    library_output_to,
)
from timing import Plan, accuracy_of
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset

from mnist_lit.train import build_model, build_trainer

#: the test accuracy that part 3 times
TARGET_ACC = 0.99


# ------------------------------------------------------------ the clock, the evaluations


class Clock:
    """Seconds of training alone: stopped while the test accuracy is evaluated."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None


@dataclass
class AccuracyRun:
    """Test accuracy at fixed points of a run, against training seconds alone."""

    evals: list[dict[str, float]] = field(default_factory=list)
    reached_s: float | None = None
    reached_epoch: float | None = None
    train_s: float = 0.0

    def add(self, epoch: float, seconds: float, acc: float) -> bool:
        """Record one evaluation; True once the target accuracy has been reached."""
        self.evals.append({"epoch": epoch, "train_s": seconds, "acc": acc})
        self.train_s = seconds
        if self.reached_s is None and acc >= TARGET_ACC:
            self.reached_s, self.reached_epoch = seconds, epoch
        return self.reached_s is not None

    def summary(self) -> str:
        """One line for the progress output."""
        if self.reached_s is None:
            best = max((e["acc"] for e in self.evals), default=0.0)
            return f"not reached after {self.train_s:.1f} s (best {best:.2%})"
        return f"{self.reached_s:.1f} s (epoch {self.reached_epoch:.2f})"


class AccuracyEvery(L.Callback):
    """Test accuracy every ``1/per_epoch`` of an epoch, with the clock stopped meanwhile."""

    def __init__(
        self, per_epoch: int, test_batches: Callable[[], Iterable[tuple[Tensor, Tensor]]]
    ) -> None:
        self.per_epoch, self.test_batches = per_epoch, test_batches
        self.run, self.clock = AccuracyRun(), Clock()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock.start()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        total = int(trainer.num_training_batches)
        done = idx + 1
        if done % math.ceil(total / self.per_epoch) and done < total:
            return
        self.clock.stop()
        accuracy = accuracy_of(pl_module, self.test_batches())
        self.run.add(trainer.current_epoch + done / total, self.clock.seconds, accuracy)
        if done < total:
            self.clock.start()


# ------------------------------------------------------------------------ the two recipes


class ExamplesNet(nn.Module):
    """pytorch/examples' MNIST ``Net``: two 3x3 convs, max-pool, dropout, two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def examples_time_to_accuracy(plan: Plan, data_dir: Path) -> AccuracyRun:
    """The pytorch/examples recipe, test accuracy every half epoch, until 99.0 % or the cap."""
    torch.manual_seed(EXAMPLES_SEED)
    train_loader = examples_loader(data_dir, 64, plan.examples_workers)
    test_set: Any = examples_dataset(data_dir, train=False)
    if plan.tta_test_images:
        test_set = Subset(test_set, range(plan.tta_test_images))
    test_loader = DataLoader(test_set, batch_size=1000, num_workers=plan.examples_workers)
    model = ExamplesNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    per_epoch = min(len(train_loader), plan.tta_batches or len(train_loader))
    every = math.ceil(per_epoch / 2)
    run, clock = AccuracyRun(), Clock()
    for epoch in range(plan.examples_max_epochs):
        model.train()
        clock.start()
        for done, (images, labels) in enumerate(train_loader, start=1):
            optimizer.zero_grad()
            F.nll_loss(model(images), labels).backward()
            optimizer.step()
            if done % every and done < per_epoch:
                continue
            clock.stop()
            if run.add(epoch + done / per_epoch, clock.seconds, accuracy_of(model, test_loader)):
                return run
            if done == per_epoch:
                break
            clock.start()
        scheduler.step()
    return run


def fast_time_to_accuracy(plan: Plan, run_dir: Path, log_path: Path) -> AccuracyRun:
    """``experiment=fast`` through the project's Trainer, test accuracy every quarter epoch."""
    overrides = ["experiment=fast", "trainer=cpu", *NO_PROGRESS_BAR]
    if plan.tta_batches:
        overrides += [
            f"+trainer.limit_train_batches={plan.tta_batches}",
            "+trainer.limit_val_batches=1",
        ]
    cfg = compose_config("train", overrides, run_dir)
    L.seed_everything(cfg.seed, verbose=False)
    with library_output_to(log_path):
        datamodule = instantiate(cfg.data)
        model = build_model(cfg)
        trainer = build_trainer(cfg)
        test_batches = math.ceil((plan.tta_test_images or 10_000) / cfg.data.eval_batch_size)
        every = AccuracyEvery(4, lambda: islice(datamodule.test_dataloader(), test_batches))
        trainer.callbacks.append(every)
        trainer.fit(model, datamodule=datamodule)
    return every.run
