"""Pictures for TensorBoard: the inputs, the confusion matrix and the worst test mistakes.

They draw with matplotlib and write through the TensorBoard logger's ``SummaryWriter``; with no
TensorBoard logger they do nothing.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix
from torchvision.utils import make_grid


def _tensorboard(trainer: L.Trainer) -> Any | None:
    """The TensorBoard ``SummaryWriter`` of the trainer, if it has a TensorBoard logger."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            return logger.experiment
    return None


def _pixels(images: Tensor, trainer: L.Trainer) -> Tensor:
    """Undo the data module's normalization so images show as MNIST's 0..1 pixels."""
    datamodule = getattr(trainer, "datamodule", None)  # None when fitted on bare loaders
    mean = getattr(getattr(datamodule, "hparams", None), "mean", 0.0)
    std = getattr(getattr(datamodule, "hparams", None), "std", 1.0)
    return (images.float() * std + mean).clamp(0, 1)


class SampleBatchImages(L.Callback):
    """Logs the first training batch as a grid: what the network really sees, once per run.

    A resumed run starts past that batch and logs none.
    """

    def __init__(self, count: int = 64) -> None:
        self.count = count

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        writer = _tensorboard(trainer)
        if writer is not None and trainer.global_step == 0 and batch_idx == 0:
            images = _pixels(batch[0][: self.count].detach().cpu(), trainer)
            writer.add_image("inputs/train_batch", make_grid(images, nrow=16, pad_value=1.0), 0)


class TestReportImages(L.Callback):
    """At the end of testing: the confusion matrix and the most confident mistakes, as figures."""

    def __init__(self, num_classes: int = 10, worst: int = 36) -> None:
        self.num_classes, self.worst = num_classes, worst
        self.confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self._reset()

    def _reset(self) -> None:
        self.confusion.reset()
        self.mistakes: tuple[Tensor, Tensor, Tensor, Tensor] = (
            torch.empty(0),
            torch.empty(0, 1, 28, 28),
            torch.empty(0, dtype=torch.long),
            torch.empty(0, dtype=torch.long),
        )

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not isinstance(outputs, Tensor):
            return  # test_step returns the class probabilities; anything else: nothing to draw
        images, labels = batch[0].detach().cpu(), batch[1].detach().cpu()
        probabilities = outputs.detach().float().cpu()
        confidence, predicted = probabilities.max(dim=1)
        self.confusion.update(predicted, labels)
        wrong = predicted != labels
        # keep only the `worst` most confident mistakes seen so far
        merged = [
            torch.cat([old, new[wrong]])
            for old, new in zip(self.mistakes, (confidence, images, labels, predicted), strict=True)
        ]
        order = merged[0].argsort(descending=True)[: self.worst]
        self.mistakes = tuple(part[order] for part in merged)  # type: ignore[assignment]

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = _tensorboard(trainer)
        if writer is None:
            return
        step = trainer.global_step
        writer.add_figure("test/confusion_matrix", self.confusion_figure(), step)
        if len(self.mistakes[0]):
            writer.add_figure("test/worst_mistakes", self.mistakes_figure(trainer), step)

    def confusion_figure(self) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        counts = self.confusion.compute().numpy()
        fig, ax = plt.subplots(figsize=(6, 5.5))
        ax.imshow(counts, cmap="Blues")
        for true in range(self.num_classes):
            for pred in range(self.num_classes):
                ax.text(
                    pred,
                    true,
                    str(int(counts[true, pred])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if counts[true, pred] > counts.max() / 2 else "black",
                )
        ax.set(
            xlabel="predicted",
            ylabel="true",
            xticks=range(self.num_classes),
            yticks=range(self.num_classes),
            title="test confusion matrix",
        )
        fig.tight_layout()
        return fig

    def mistakes_figure(self, trainer: L.Trainer) -> Any:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        confidence, images, labels, predicted = self.mistakes
        images = _pixels(images, trainer)
        columns = 6
        rows = -(-len(images) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.5, rows * 1.7), squeeze=False)
        for index, ax in enumerate(axes.flat):
            ax.axis("off")
            if index < len(images):
                ax.imshow(images[index, 0].numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_title(
                    f"true {labels[index]} → {predicted[index]}\np={confidence[index]:.2f}",
                    fontsize=8,
                )
        fig.suptitle("most confident test mistakes")
        fig.tight_layout()
        return fig
