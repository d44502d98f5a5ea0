"""The LightningModule: a network, cross-entropy, accuracy metrics, optimizer and LR schedule.

It takes the *configs* of the network, optimizer and scheduler (plain dicts with ``_target_``)
rather than built objects, and saves them as hyper-parameters, so that
``LitClassifier.load_from_checkpoint(path)`` rebuilds the same model with no other argument.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lit.errors import UserError


class LitClassifier(L.LightningModule):
    """Classifies images into ``num_classes`` classes.

    Args:
        net: config of an ``nn.Module`` (``_target_`` and its arguments), as in
            ``conf/model/cnn.yaml``.
        optimizer: config of a ``torch.optim`` optimizer with ``_partial_: true``; the parameters
            are filled in here.
        scheduler: config of a ``torch.optim.lr_scheduler`` scheduler with ``_partial_: true``, or
            ``None``. A schedule that spans the whole run gets its length filled in
            (``OneCycleLR.total_steps``, ``CosineAnnealingLR.T_max``) and is stepped every batch;
            any other (``StepLR``) is stepped every epoch.
        num_classes: number of classes (10 for MNIST).
        label_smoothing: the share of each training target spread over all classes
            (``nn.CrossEntropyLoss``'s); validation and test losses stay plain cross-entropy,
            comparable between runs.
    """

    def __init__(
        self,
        net: dict[str, Any],
        optimizer: dict[str, Any],
        scheduler: dict[str, Any] | None = None,
        num_classes: int = 10,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        # logger=False: train.py logs all hyper-parameters with the final metrics, once.
        self.save_hyperparameters(logger=False)
        self.net: nn.Module = instantiate(net)
        self.criterion = nn.CrossEntropyLoss()
        self.train_criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_acc_best = MaxMetric()
        # epoch means of the loss as metrics: reduced across DDP ranks like the accuracies
        self.train_loss, self.val_loss, self.test_loss = MeanMetric(), MeanMetric(), MeanMetric()
        # saved in checkpoints, so a run resumed mid-epoch ends that epoch with the same means
        # and keeps its best validation accuracy
        for metric in (self.train_acc, self.train_loss, self.val_acc_best):
            metric.persistent(True)
        # lets Lightning's summary show each layer's output shape and FLOPs
        self.example_input_array = torch.zeros(1, 1, 28, 28)
        # the LR schedulers' states in the checkpoint a fit resumes from (None: a fresh fit)
        self._resumed_schedules: list[dict[str, Any]] | None = None

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def _step(
        self, batch: tuple[Tensor, Tensor], criterion: nn.Module | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, logits, labels)`` of a batch: what every stage logs from."""
        images, labels = batch
        logits = self(images)
        return (criterion or self.criterion)(logits, labels), logits, labels

    # Metrics are updated per batch and logged once per epoch: a `self.log` per step costs
    # more than a whole MLP step. `compute()` reduces across DDP ranks.

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, logits, labels = self._step(batch, self.train_criterion)
        self.train_acc.update(logits, labels)  # torchmetrics takes the argmax of [N, C] scores
        self.train_loss.update(loss.detach(), weight=len(labels))
        return loss

    def on_train_epoch_end(self) -> None:
        self._log_and_reset("train", self.train_loss, self.train_acc)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.val_acc.update(logits, labels)
        self.val_loss.update(loss, weight=len(labels))

    def on_validation_epoch_end(self) -> None:
        accuracy = self._log_and_reset("val", self.val_loss, self.val_acc)
        if self.trainer.sanity_checking:  # a few batches of an untrained model: not a result
            return
        self.val_acc_best.update(accuracy)
        self.log("val/acc_best", self.val_acc_best.compute())

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, logits, labels = self._step(batch)
        self.test_acc.update(logits, labels)
        self.test_loss.update(loss, weight=len(labels))
        # the class probabilities, for callbacks (confusion matrix, worst mistakes)
        return torch.softmax(logits.detach(), dim=1)

    def on_test_epoch_end(self) -> None:
        self._log_and_reset("test", self.test_loss, self.test_acc)

    def _log_and_reset(self, stage: str, loss: MeanMetric, accuracy: MulticlassAccuracy) -> Tensor:
        """Log a stage's epoch loss and accuracy, start both afresh; return the accuracy."""
        value = accuracy.compute()
        self.log(f"{stage}/loss", loss.compute(), prog_bar=stage == "train")
        self.log(f"{stage}/acc", value, prog_bar=stage == "val")
        loss.reset()
        accuracy.reset()
        return value

    def predict_step(self, batch: Tensor | tuple[Tensor, ...], batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return torch.softmax(self(images), dim=1)

    # Resuming (`ckpt_path`, `resume=`): Lightning loads the optimizer and the schedule from the
    # checkpoint over what configure_optimizers built, so a schedule planned for another run
    # length, or the lr a finished schedule left, would silently win over the config.

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resumed_schedules = checkpoint.get("lr_schedulers", [])

    def on_fit_start(self) -> None:
        """Before the checkpoint's optimizer state is loaded: does its schedule fit this run?"""
        if self._resumed_schedules is None:
            return
        planned = [config.scheduler for config in self.trainer.lr_scheduler_configs]
        # known here when a schedule spans the run: configure_optimizers asked for its length
        per_epoch = self.trainer.num_training_batches
        problem = _schedule_mismatch(self._resumed_schedules, planned, per_epoch)
        if problem:
            raise UserError(
                f"cannot resume: {problem}. Resume with the run's own scheduler and "
                "trainer.max_epochs, or go on at a fixed lr: scheduler=none optimizer.lr=<lr>"
            )

    def on_train_start(self) -> None:
        """Without a schedule, a resumed fit trains at the config's lr (and other settings)."""
        resumed, self._resumed_schedules = self._resumed_schedules is not None, None
        if not resumed or self.hparams["scheduler"]:
            return
        (optimizer,) = self.trainer.optimizers  # configure_optimizers makes one
        configured = instantiate(self.hparams["optimizer"])(params=self.parameters())
        for group, wanted in zip(optimizer.param_groups, configured.param_groups, strict=True):
            params = group["params"]
            group.clear()  # drops what a schedule added (initial_lr, max_lr, ...)
            group.update(wanted, params=params)

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams["optimizer"])(params=self.parameters())
        if not self.hparams["scheduler"]:
            return optimizer
        make_scheduler = instantiate(self.hparams["scheduler"])
        run_length = _run_length_argument(make_scheduler)
        if run_length is None:
            return {"optimizer": optimizer, "lr_scheduler": make_scheduler(optimizer)}
        # at least 10: OneCycleLR divides by its warm-up length, 0 steps for a 4-step run
        total_steps = max(int(self.trainer.estimated_stepping_batches), 10)
        scheduler = make_scheduler(optimizer, **{run_length: total_steps})
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


#: scheduler arguments that mean "length of the whole run" and are filled in from the trainer
_RUN_LENGTH_ARGUMENTS = ("total_steps", "T_max")


def _schedule_mismatch(
    saved: list[dict[str, Any]], planned: list[Any], batches_per_epoch: float
) -> str | None:
    """Why the checkpoint's LR schedules (states) cannot go on as this run's, or None."""
    if not planned:
        return None  # a fixed lr from here on: on_train_start sets the config's
    if not saved:
        return "the checkpoint was trained without an LR schedule and this run has one"
    if len(saved) != len(planned):
        return f"the checkpoint has {len(saved)} LR schedules and this run {len(planned)}"
    for state, scheduler in zip(saved, planned, strict=True):
        name = type(scheduler).__name__
        if set(state) != set(scheduler.state_dict()):
            return f"the checkpoint was trained with another LR schedule than {name}"
        for argument in _RUN_LENGTH_ARGUMENTS:
            steps, now = state.get(argument), getattr(scheduler, argument, None)
            if steps is not None and steps != now:
                plans = "none" if now is None else f"{now} ({now / batches_per_epoch:.3g} epochs)"
                return (
                    f"its {name} was planned over {steps} steps ({steps / batches_per_epoch:.3g} "
                    f"epochs of {batches_per_epoch:g} batches) and this run plans {plans}"
                )
    return None


def _run_length_argument(make_scheduler: Any) -> str | None:
    """The run-length argument of a partial scheduler that the config left unset, if any."""
    already_set = getattr(make_scheduler, "keywords", {})
    parameters = inspect.signature(getattr(make_scheduler, "func", make_scheduler)).parameters
    for name in _RUN_LENGTH_ARGUMENTS:
        if name in parameters and name not in already_set:
            return name
    return None
