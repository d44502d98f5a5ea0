"""The type and range of every value a user sets, declared once per config group (pydantic).

Each model mirrors one file of ``conf/`` and is found by the ``_target_`` of the node it checks
(``TARGETS``), or by the config's name for the top-level options (``OPTIONS``). Checking is
pydantic's, strict (``"16"`` is not ``16``, ``true`` is not ``1``); unknown keys are refused.
Only keys a config has are checked: defaults live in the YAML files and the classes, not here.

What a class checks itself when it is built (Lightning's ``Trainer`` arguments, a callback's,
a network added without a model here) is left to it: ``train.py`` reports that as one line too.
This module imports neither torch nor Lightning, so checks answer in a fraction of a second.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

MAX_SEED = 2**32 - 1  # the largest seed numpy (and so Lightning's seed_everything) takes

Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, lt=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
# Lightning reads an int as a number of batches and a float as a fraction of them
Batches = Annotated[int, Field(ge=0)] | Fraction


def _written_as_decimal(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"write it as a decimal number ({value}.0): torch takes no int here")
    return value


def _not_zero_epochs(value: int) -> int:
    if value == 0:
        raise ValueError("0 epochs trains nothing: use 1 or more, or -1 for no limit")
    return value


#: a float that torch refuses as an int (``OneCycleLR``'s ``pct_start``)
DecimalFraction = Annotated[Fraction, BeforeValidator(_written_as_decimal)]
Epochs = Annotated[int, Field(ge=-1), AfterValidator(_not_zero_epochs)]


class Node(BaseModel):
    """A config node: strict types, no unknown keys.

    Every model here is ``defer_build``: pydantic builds its validator when it first checks a
    value, so a command pays only for the groups its config has (predict: a few of twenty).
    """

    model_config = ConfigDict(strict=True, defer_build=True, extra="forbid")


class Options(BaseModel):
    """A command's own top-level keys: strict types; keys of other groups are left to them."""

    model_config = ConfigDict(strict=True, defer_build=True, extra="ignore")


# ----------------------------------------------------------------------------- conf/data


class Augment(Node):
    """``data.augment``: ``data/augment.py``'s ``DigitAugment`` (0 turns an effect off)."""

    shift: NonNegative  # pixels
    degrees: NonNegative
    scale: Probability
    thicken: NonNegative  # most pixels strokes grow by
    thin: NonNegative  # most pixels strokes shrink by
    blur: NonNegative  # largest Gaussian sigma, pixels
    low_res: Probability  # largest fraction of the side lost before enlarging back
    contrast: NonNegative  # largest |log gamma|
    faint: Probability  # largest fraction of the ink lost
    noise: NonNegative  # largest noise std
    p: Annotated[float, Field(gt=0, le=1)]  # share of images augmented


class Data(Node):
    """``conf/data/*.yaml``: ``data/datamodule.py``'s ``MNISTDataModule`` (and subclasses)."""

    data_dir: str
    batch_size: Count
    eval_batch_size: Count
    val_size: Count  # and fewer than the training set: the data module checks that
    split_seed: Seed
    shuffle_seed: Seed
    mean: Fraction  # of pixel / 255
    std: Positive
    augment: Augment | None
    on_device: bool


# ----------------------------------------------------------------------------- conf/model


class Network(Node):
    """What every network of ``models/`` takes."""

    dropout: Probability
    batchnorm: bool
    width: Positive  # multiplies every layer's width
    num_classes: Count


class CNN(Network):
    """``conf/model/cnn.yaml``: ``models/cnn.py``."""

    # each block halves the 28 px image: at most 4
    channels: list[Count] = Field(min_length=1, max_length=4)
    hidden: Count
    convs_per_block: Count
    in_channels: Count
    image_size: Count


class MLP(Network):
    """``conf/model/mlp.yaml``: ``models/mlp.py``."""

    hidden_sizes: list[Count]
    in_features: Count


# ----------------------------------------------------------------------------- conf/optimizer


class Optimizer(Node):
    lr: Positive
    weight_decay: NonNegative
    # one fused kernel for the whole update; null: torch picks
    fused: bool | None


class Adam(Optimizer):
    """``conf/optimizer/adam.yaml`` and ``adamw.yaml``."""

    betas: list[Probability] = Field(min_length=2, max_length=2)
    eps: Positive
    amsgrad: bool


class SGD(Optimizer):
    """``conf/optimizer/sgd.yaml``."""

    momentum: Probability
    dampening: Probability
    nesterov: bool

    @model_validator(mode="before")
    @classmethod
    def nesterov_needs_momentum(cls, values: object) -> object:
        # torch refuses it too, but only once training has started
        if not isinstance(values, dict):
            return values
        nesterov = values.get("nesterov") is True
        if nesterov and (not values.get("momentum", 0) or values.get("dampening", 0)):
            raise ValueError("nesterov=true needs momentum > 0 and dampening=0")
        return values


# ----------------------------------------------------------------------------- conf/scheduler


class OneCycle(Node):
    """``conf/scheduler/onecycle.yaml`` (``total_steps`` is filled in from the trainer)."""

    max_lr: Positive
    pct_start: DecimalFraction
    div_factor: Positive
    final_div_factor: Positive
    anneal_strategy: Literal["cos", "linear"]
    three_phase: bool
    total_steps: Count


class Cosine(Node):
    """``conf/scheduler/cosine.yaml`` (``T_max`` is filled in from the trainer)."""

    eta_min: NonNegative
    T_max: Count


class Step(Node):
    """``conf/scheduler/step.yaml``."""

    step_size: Count  # epochs
    gamma: Positive  # the lr is multiplied by it


# ----------------------------------------------------------------------------- conf/trainer


class Trainer(Node):
    """``conf/trainer/*.yaml``: the types of the Trainer arguments our configs set.

    Lightning's ``Trainer`` checks its own ranges and names (precision, accelerator, strategy,
    devices...) when it is built; any other argument it takes may be added with ``+trainer.``.
    """

    model_config = ConfigDict(extra="allow")  # strict and defer_build: from Node

    max_epochs: Epochs | None  # -1: no limit
    max_steps: Annotated[int, Field(ge=-1)]
    check_val_every_n_epoch: Count | None
    log_every_n_steps: Annotated[int, Field(ge=0)] | None
    limit_train_batches: Batches | None
    limit_val_batches: Batches | None
    limit_test_batches: Batches | None
    overfit_batches: Batches
    deterministic: bool | Literal["warn"] | None
    default_root_dir: str | None
    # set by some configs or with +trainer.; Lightning takes any value here without a check
    accumulate_grad_batches: Count = 1
    use_distributed_sampler: bool = True
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    enable_checkpointing: bool | None = None
    num_sanity_val_steps: Annotated[int, Field(ge=-1)] | None = None
    benchmark: bool | None = None
    inference_mode: bool = True
    sync_batchnorm: bool = False
    detect_anomaly: bool = False


# ----------------------------------------------------------------------------- conf/logger


class MLflowLogger(Node):
    """``conf/logger/mlflow.yaml``: ``loggers.TrackedMLFlowLogger`` (Lightning's arguments)."""

    experiment_name: Annotated[str, Field(min_length=1, max_length=500)]
    run_name: str | None
    tracking_uri: str | None
    artifact_location: str | None
    tags: dict[str, str] | None
    log_model: bool | Literal["all"]
    prefix: str
    save_dir: str | None = None
    run_id: str | None = None
    synchronous: bool | None = None


class WandbLogger(Node):
    """``conf/logger/wandb.yaml``: ``loggers.TrackedWandbLogger``; any other key goes to
    ``wandb.init`` (``+logger.wandb.notes=...``), which checks it."""

    model_config = ConfigDict(extra="allow")  # strict and defer_build: from Node

    project: str | None
    entity: str | None
    offline: bool
    save_dir: str
    name: str | None
    group: str | None
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None
    job_type: str | None
    log_model: bool | Literal["all"]
    prefix: str


# ----------------------------------------------------------------------------- top level


def _usable_tag(value: str) -> str:
    # W&B takes tags of up to 64 characters; MLflow makes each a tag key (these characters only)
    if not re.fullmatch(r"[\w.\- ]{1,64}", value):
        raise ValueError(
            "a tag is 1 to 64 letters, digits, '_', '-', '.' or spaces (each tracker takes those)"
        )
    return value


#: a label of a run: ``tags=[baseline,lr-sweep]`` (``loggers.py``)
Tag = Annotated[str, AfterValidator(_usable_tag)]


class Trackers(Node):
    """``trackers``: a machine's tracker settings, from ``conf/local/default.yaml``; the logger
    configs read them (``conf/logger/mlflow.yaml``, ``wandb.yaml``)."""

    mlflow_uri: str | None = None
    wandb_offline: bool = True
    wandb_entity: str | None = None


class TrainOptions(Options):
    """``conf/train.yaml``'s own keys (the groups are checked by their ``_target_``)."""

    seed: Seed
    test: bool
    ckpt_path: str | None
    stop_at: Annotated[float, Field(gt=0, le=1)] | None  # a val/acc
    compile: bool
    optimized_metric: str
    tags: list[Tag] | Tag = []  # one tag may be given alone: tags=baseline
    trackers: Trackers | None = None


class EvalOptions(Options):
    """``conf/eval.yaml``."""

    seed: Seed
    ckpt_path: str


class Preprocess(Node):
    """``predict.preprocess``: ``data/preprocess.py``."""

    box_size: Annotated[int, Field(ge=1, le=28)] | None
    threshold: Annotated[float, Field(gt=0, lt=1)]


class PredictOptions(Options):
    """``conf/predict.yaml``."""

    ckpt_path: str
    images: str | list[str]
    output: Annotated[str, Field(pattern=r"(?i)\.(csv|json)$")] | None
    batch_size: Count
    preprocess: Preprocess


#: export's formats and the suffix of the file each writes
EXPORT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}


class ExportOptions(Options):
    """``conf/export.yaml``."""

    ckpt_path: str
    format: Literal["onnx", "torchscript"]
    output: str | None
    verify: bool
    atol: Positive
    batch_size: Count
    threads: Count | None


#: the config groups each command cannot run without (so ``model=null`` or ``~model`` is refused)
REQUIRED_GROUPS = {
    "train": ("data", "model", "optimizer", "trainer", "paths"),
    "eval": ("data", "trainer", "paths"),
    "predict": ("data", "paths"),
    "export": ("data", "paths"),
}
#: schedules that plan the lr over the whole run, so they need to know its length
PLANNED_SCHEDULES = (
    "torch.optim.lr_scheduler.OneCycleLR",
    "torch.optim.lr_scheduler.CosineAnnealingLR",
)


def whole_config_problem(task: str, values: dict[str, Any]) -> str | None:
    """What no single group can see: a group the command needs, and groups that clash."""
    for group in REQUIRED_GROUPS.get(task, ()):
        if not values.get(group):
            return f"{group} is required by {task}.py (set to null or deleted): {group}=<option>"
    if task != "train":
        return None
    trainer, scheduler = values["trainer"], values.get("scheduler") or {}
    if not isinstance(trainer, dict) or not isinstance(scheduler, dict):
        return None  # each group's own check names it
    endless = trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) == -1
    if endless and scheduler.get("_target_") in PLANNED_SCHEDULES:
        return (
            "trainer.max_epochs=-1 (no limit) cannot go with a schedule planned over the whole "
            "run: set trainer.max_steps, or scheduler=none or scheduler=step"
        )
    stoppers = [
        f"callbacks.{name}"
        for name, callback in (values.get("callbacks") or {}).items()
        if isinstance(callback, dict) and str(callback.get("_target_")).endswith("EarlyStopping")
    ]
    if trainer.get("limit_val_batches") == 0 and stoppers:
        return (
            f"trainer.limit_val_batches=0 runs no validation, but {', '.join(stoppers)} stops on "
            f"a validation metric: set {stoppers[0]}=null too"
        )
    return None


#: the model that checks a config node, by the node's ``_target_``
TARGETS: dict[str, type[Node]] = {
    "mnist_lit.data.MNISTDataModule": Data,
    "mnist_lit.data.FashionMNISTDataModule": Data,
    "mnist_lit.models.CNN": CNN,
    "mnist_lit.models.MLP": MLP,
    "torch.optim.Adam": Adam,
    "torch.optim.AdamW": Adam,
    "torch.optim.SGD": SGD,
    "torch.optim.lr_scheduler.OneCycleLR": OneCycle,
    "torch.optim.lr_scheduler.CosineAnnealingLR": Cosine,
    "torch.optim.lr_scheduler.StepLR": Step,
    "lightning.pytorch.Trainer": Trainer,
    "mnist_lit.loggers.TrackedMLFlowLogger": MLflowLogger,
    "mnist_lit.loggers.TrackedWandbLogger": WandbLogger,
}

#: the model of each config's own top-level keys, by config name
OPTIONS: dict[str, type[BaseModel]] = {
    "train": TrainOptions,
    "eval": EvalOptions,
    "predict": PredictOptions,
    "export": ExportOptions,
}


# ----------------------------------------------------------------------------- conf/serve.yaml


class ServeLimits(Node):
    """``serve.limits``: what one request may send (``serving/server.py``)."""

    max_body_bytes: Annotated[int, Field(ge=1024)]
    max_pixels: Annotated[int, Field(ge=28 * 28)]
    max_batch: Count


class ServeOptions(Options):
    """``conf/serve.yaml``."""

    ckpt_path: str
    runtime: Literal["checkpoint", "onnx"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    workers: Count
    limits: ServeLimits
    access_log: bool


OPTIONS["serve"] = ServeOptions
REQUIRED_GROUPS["serve"] = ("paths",)
