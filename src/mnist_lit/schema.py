"""The type and range of each config group's values (pydantic), found by the node's ``_target_``
(``TARGETS``), and of each command's own top-level keys (``OPTIONS``). Types are strict (``"16"``
is not 16) and unknown keys refused; only the keys a config has are checked (defaults live in
the YAML files and the classes). ``config.check`` uses them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]  # the largest seed numpy takes
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, lt=1)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Batches = Annotated[int, Field(ge=0)] | Fraction  # Lightning: an int counts, a float is a share


def _not_zero(epochs: int) -> int:
    if epochs == 0:
        raise ValueError("0 epochs trains nothing: use 1 or more, or -1 for no limit")
    return epochs


def _decimal(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"write it as a decimal number ({value}.0): torch takes no int here")
    return value


class Node(BaseModel):
    """A config node: strict types (``"16"`` is not 16), no unknown keys; built on first use."""

    model_config = ConfigDict(strict=True, defer_build=True, extra="forbid")


class Augment(Node):
    """``data.augment``: ``data/augment.py``'s ``DigitAugment`` (0 turns an effect off)."""

    shift: NonNegative
    degrees: NonNegative
    scale: Probability
    thicken: NonNegative
    thin: NonNegative
    blur: NonNegative
    low_res: Probability
    contrast: NonNegative
    faint: Probability
    noise: NonNegative
    p: Annotated[float, Field(gt=0, le=1)]


class PenDigits(Node):
    """``data.pen_digits``: pen-drawn digits (``data/pen_digits.py``) added to training batches."""

    fraction: Annotated[float, Field(gt=0, le=1)]


class Data(Node):
    """``conf/data/*.yaml``: ``MNISTDataModule`` and its subclasses."""

    data_dir: str
    batch_size: Count
    eval_batch_size: Count
    val_size: Count
    split_seed: Seed
    shuffle_seed: Seed
    mean: Fraction
    std: Positive
    augment: Augment | None
    on_device: bool
    pen_digits: PenDigits | None


class Network(Node):
    dropout: Probability
    batchnorm: bool
    width: Positive
    num_classes: Count


class CNN(Network):
    channels: list[Count] = Field(min_length=1, max_length=4)  # each block halves 28 px
    hidden: Count
    convs_per_block: Count
    in_channels: Count
    image_size: Count


class MLP(Network):
    hidden_sizes: list[Count]
    in_features: Count


class Optimizer(Node):
    lr: Positive
    weight_decay: NonNegative
    fused: bool | None


class Adam(Optimizer):
    betas: list[Probability] = Field(min_length=2, max_length=2)
    eps: Positive
    amsgrad: bool


class SGD(Optimizer):
    momentum: Probability
    dampening: Probability
    nesterov: bool

    @model_validator(mode="before")
    @classmethod
    def nesterov_needs_momentum(cls, values: Any) -> Any:  # torch refuses it only once training
        nesterov = isinstance(values, dict) and values.get("nesterov") is True
        if nesterov and (not values.get("momentum", 0) or values.get("dampening", 0)):
            raise ValueError("nesterov=true needs momentum > 0 and dampening=0")
        return values


class OneCycle(Node):
    max_lr: Positive
    pct_start: Annotated[Fraction, BeforeValidator(_decimal)]
    div_factor: Positive
    final_div_factor: Positive
    anneal_strategy: Literal["cos", "linear"]
    three_phase: bool
    total_steps: Count


class Cosine(Node):
    eta_min: NonNegative
    T_max: Count


class Step(Node):
    step_size: Count
    gamma: Positive


class Trainer(Node):
    """The Trainer arguments our configs set; Lightning checks the rest when it is built."""

    model_config = ConfigDict(extra="allow")

    max_epochs: Annotated[int, Field(ge=-1), AfterValidator(_not_zero)] | None
    max_steps: Annotated[int, Field(ge=-1)]
    check_val_every_n_epoch: Count | None
    log_every_n_steps: Annotated[int, Field(ge=0)] | None
    limit_train_batches: Batches | None
    limit_val_batches: Batches | None
    limit_test_batches: Batches | None
    val_check_interval: Batches | None
    overfit_batches: Batches
    deterministic: bool | Literal["warn"] | None
    accumulate_grad_batches: Count = 1
    num_sanity_val_steps: Annotated[int, Field(ge=-1)] | None = None
    enable_progress_bar: bool | None = None
    enable_model_summary: bool | None = None
    enable_checkpointing: bool | None = None
    use_distributed_sampler: bool = True
    sync_batchnorm: bool = False


class Options(BaseModel):
    """A command's own top-level keys; the groups are checked by their ``_target_``."""

    model_config = ConfigDict(strict=True, defer_build=True, extra="ignore")


class TrainOptions(Options):
    seed: Seed
    test: bool
    ckpt_path: str | None
    stop_at: Annotated[float, Field(gt=0, le=1)] | None
    compile: bool
    label_smoothing: Probability
    optimized_metric: str
    tags: list[Annotated[str, Field(pattern=r"^[\w.\- ]{1,64}$")]] | str = []


class EvalOptions(Options):
    seed: Seed
    ckpt_path: str


#: the model that checks a node, by its ``_target_``
TARGETS: dict[str, type[Node]] = {
    "mnist_lit.data.MNISTDataModule": Data,
    "mnist_lit.data.fashion_mnist.FashionMNISTDataModule": Data,
    "mnist_lit.models.cnn.CNN": CNN,
    "mnist_lit.models.mlp.MLP": MLP,
    "torch.optim.Adam": Adam,
    "torch.optim.AdamW": Adam,
    "torch.optim.SGD": SGD,
    "torch.optim.lr_scheduler.OneCycleLR": OneCycle,
    "torch.optim.lr_scheduler.CosineAnnealingLR": Cosine,
    "torch.optim.lr_scheduler.StepLR": Step,
    "lightning.pytorch.Trainer": Trainer,
}
#: each command's own keys, and the groups it cannot run without
OPTIONS: dict[str, tuple[type[Options], tuple[str, ...]]] = {
    "train": (TrainOptions, ("data", "model", "optimizer", "trainer", "paths")),
    "eval": (EvalOptions, ("data", "trainer", "paths")),
}
