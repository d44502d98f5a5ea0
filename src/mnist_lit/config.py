"""The config: where ``conf/`` is, its resolvers, and the check of its values before any work.

``check(cfg)`` refuses the first value that cannot work, in one line naming the key: types and
ranges come from the pydantic models below, found by each node's ``_target_``. A class with no
model here (a network you add) checks its own arguments when it is built, and ``train.py``
reports that as one line too. Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from mnist_lit.errors import UserError

PROJECT_ROOT = next(
    (p for p in Path(__file__).resolve().parents if (p / "conf" / "train.yaml").is_file()),
    Path.cwd(),  # an installed package run from elsewhere: conf/ is where you are
)
CONFIG_DIR = PROJECT_ROOT / "conf"

#: the run dirs this process has claimed, by the path asked for
_CLAIMED: dict[str, str] = {}


def unique_dir(path: str, mode: str = "RUN") -> str:
    """``path``, or ``path_1``, ``path_2``...: the first this process could create.

    ``mkdir`` is atomic, so runs started in the same second (same time-stamped name) each get
    their own dir. ``mode`` is the Hydra mode the dir is for: asked in the other one (Lightning
    reads a sweep job's run dir to start DDP ranks), nothing is claimed.
    """
    asked_in = getattr(HydraConfig.get().mode, "name", None) if HydraConfig.initialized() else None
    if asked_in is not None and asked_in != mode:
        return path
    if path not in _CLAIMED:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        for n in itertools.count():
            candidate = f"{path}_{n}" if n else path
            try:
                Path(candidate).mkdir()
            except FileExistsError:
                continue
            _CLAIMED[path] = candidate
            break
    return _CLAIMED[path]


# cached: Hydra copies the config to each job of a sweep, which then finds the same sweep dir
OmegaConf.register_new_resolver("unique_dir", unique_dir, replace=True, use_cache=True)
OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)


def plain_dict(node: DictConfig) -> dict[str, Any]:
    """A config node as plain, resolved data (what checkpoints and loggers store)."""
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- value models

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


# ----------------------------------------------------------------------------- checking


def check(
    cfg: DictConfig, options: type[Options] | None = None, required: tuple[str, ...] = ()
) -> None:
    """A ``UserError`` for the first value of ``cfg`` that cannot work.

    ``options`` checks the command's own top-level keys and ``required`` names the groups it
    cannot run without; both default to train's or eval's, by ``task_name``.
    """
    if options is None:
        options, required = OPTIONS.get(str(cfg.get("task_name")), (Options, ()))
    for group in required:
        if not cfg.get(group):
            raise UserError(f"{group} is required (set to null or deleted): {group}=<option>")
    values = _resolved(cfg)
    _check("", options, values)
    for path, node in _nodes_with_target(values):
        model = TARGETS.get(str(node["_target_"]))
        if model is not None:
            _check(f"{path}.", model, {k: v for k, v in node.items() if not k.startswith("_")})
    _check_combination(values)


def _resolved(node: Any) -> Any:
    """The config as plain values, key by key; a key that cannot resolve here is left out (one
    that only a running job resolves, ``${hydra:runtime.output_dir}``, or that this command's
    config lacks, as ``${seed}`` in predict's data group): the class that uses it says so."""
    if not isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
    values: dict[str, Any] = {}
    for key in node:
        if key == "hydra":
            continue
        try:
            values[str(key)] = _resolved(node[key])
        except InterpolationResolutionError:
            continue
    return values


def _nodes_with_target(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every dict with a ``_target_`` (what the code builds) and its dotted path."""
    found = []
    if isinstance(node, dict):
        if "_target_" in node:
            found.append((path, node))
        for key, value in node.items():
            found += _nodes_with_target(value, f"{path}.{key}" if path else str(key))
    return found


def _check(prefix: str, model: type[BaseModel], values: dict[str, Any]) -> None:
    """Validate the keys ``values`` has (defaults live in the YAML and the classes)."""
    try:
        model.model_validate(values)
    except ValidationError as err:
        problems = [e for e in err.errors() if e["type"] != "missing"]
        if not problems:
            return
        first = problems[0]
        key, value = _walk(values, first["loc"])
        if first["type"] == "extra_forbidden":
            close = difflib.get_close_matches(key, list(model.model_fields), n=1)
            hint = f"did you mean '{prefix}{close[0]}'? " if close else ""
            where = prefix.rstrip(".") or "the config"
            known = ", ".join(model.model_fields)
            raise UserError(
                f"unknown config key '{prefix}{key}': {hint}{where} takes {known}"
            ) from None
        shown = (
            "null"
            if value is None
            else str(value).lower()
            if isinstance(value, bool)
            else repr(value)
        )
        reason = first["msg"].removeprefix("Value error, ")
        raise UserError(f"{prefix}{key}={shown} is invalid: {reason}") from None


def _walk(values: Any, loc: tuple[Any, ...]) -> tuple[str, Any]:
    """The dotted key a pydantic error location names in ``values`` (union branches skipped)."""
    parts = []
    for part in loc:
        if (isinstance(values, dict) and part in values) or (
            isinstance(values, list) and isinstance(part, int) and part < len(values)
        ):
            parts.append(str(part))
            values = values[part]
    return ".".join(parts), values


def _check_combination(values: dict[str, Any]) -> None:
    """What no single group can see: groups that clash."""
    trainer, scheduler = values.get("trainer") or {}, values.get("scheduler") or {}
    endless = trainer.get("max_epochs") == -1 and trainer.get("max_steps", -1) == -1
    if endless and str(scheduler.get("_target_")).endswith(("OneCycleLR", "CosineAnnealingLR")):
        raise UserError(
            "trainer.max_epochs=-1 (no limit) cannot go with a schedule planned over the whole "
            "run: set trainer.max_steps, or scheduler=none or scheduler=step"
        )
    stoppers = [
        f"callbacks.{name}"
        for name, callback in (values.get("callbacks") or {}).items()
        if isinstance(callback, dict) and str(callback.get("_target_")).endswith("EarlyStopping")
    ]
    if trainer.get("limit_val_batches") == 0 and stoppers:
        raise UserError(
            f"trainer.limit_val_batches=0 runs no validation, but {stoppers[0]} stops on a "
            f"validation metric: set {stoppers[0]}=null too"
        )
