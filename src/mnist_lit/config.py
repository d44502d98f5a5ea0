"""Config plumbing: where ``conf/`` is, and checks that fail fast with one line.

A typo (``model.dropuot=0.5``), an unknown option (``model=cnnn``), a value of the wrong type
(``data.batch_size=abc``) or out of range (``optimizer.lr=-1``), or a ``ckpt_path`` that cannot
be used must stop the program before any work, with one line that names the key (or file) and
what it takes, not a Hydra or Lightning traceback.

``validate`` checks a composed config against its schema, which has two parts:

- ``RULES``: the type and range of every value a user sets, by key. Keys a config does not have
  are skipped, so one table serves train, eval, predict and export.
- the signatures of the classes the config builds: every key of a node with a ``_target_`` must
  be an argument of that class (``inspect.signature``), so an added ``+model.foo=1`` fails here
  instead of in the constructor, after the run started.

Why not Hydra's structured configs (dataclasses in the ConfigStore)? OmegaConf 2.3 checks their
types but not ranges, has no unions (Lightning's ``limit_train_batches`` is an int *or* a float),
reports in several lines, and every YAML file would have to name its schema in its defaults list;
the table keeps the YAML files as the one place defaults live.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import itertools
import math
import re
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from hydra import compose, initialize_config_dir
from hydra._internal.utils import _locate  # hydra.utils.get_object also logs each failure
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from mnist_lit.console import first_line


def _find_project_root() -> Path:
    """The repo root (holds ``conf/``): next to ``src/`` for a clone, else the working dir."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "conf" / "train.yaml").is_file():
            return parent
    return Path.cwd()


PROJECT_ROOT = _find_project_root()
CONFIG_DIR = PROJECT_ROOT / "conf"

if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))


class ConfigError(ValueError):
    """A config value that cannot work; the message is one line naming the key and the fix."""


# ----------------------------------------------------------------------------- value checks

#: the largest seed numpy (and so Lightning's ``seed_everything``) takes
MAX_SEED = 2**32 - 1


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_fraction(value: Any) -> bool:
    """A float in [0, 1]: Lightning reads an int as a count and a float as a fraction."""
    return isinstance(value, float) and 0 <= value <= 1


def _is_list(value: Any, item: Callable[[Any], bool], min_len: int = 0, max_len: int = 99) -> bool:
    return (
        isinstance(value, (list, tuple, ListConfig))
        and min_len <= len(value) <= max_len
        and all(item(x) for x in value)
    )


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_seed(value: Any) -> bool:
    return _is_int(value) and 0 <= value <= MAX_SEED


def _positive(value: Any) -> bool:
    return _is_number(value) and value > 0


def _at_least(low: int) -> Callable[[Any], bool]:
    return lambda value: _is_int(value) and value >= low


def _one_of(choices: Callable[[], Sequence[Any]]) -> Callable[[Any], bool]:
    """One of ``choices()``, type included (``16`` and ``"16"`` differ; ``True`` is not ``1``).

    No choices (a Lightning that names them elsewhere) accepts anything: Lightning checks then.
    """
    return lambda value: (
        not choices() or any(value == c and type(value) is type(c) for c in choices())
    )


def _count_or_fraction(value: Any) -> bool:
    return (_is_int(value) and value >= 0) or _is_fraction(value)


def _is_devices(value: Any) -> bool:
    """Lightning's ``devices``: a count, -1 (all), 'auto', or device indices."""
    if _is_int(value):
        return value >= 1 or value == -1
    if isinstance(value, str):
        return value == "auto" or bool(re.fullmatch(r"-1|\d+(,\d+)*,?", value.replace(" ", "")))
    return _is_list(value, _at_least(0), min_len=1)


def _is_interval(value: Any) -> bool:
    """Lightning's ``val_check_interval``: batches, a fraction of an epoch, or a duration."""
    if isinstance(value, str):
        return re.fullmatch(r"\d+:\d\d:\d\d:\d\d", value) is not None
    if isinstance(value, DictConfig):  # timedelta's arguments: {minutes: 5}
        return True
    return (_is_int(value) and value >= 1) or (_is_fraction(value) and value > 0)


@functools.cache
def _lightning_choices(name: str) -> tuple[Any, ...]:
    """What Lightning's Trainer takes as ``precision``, ``accelerator`` or ``strategy`` names."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    if name == "accelerator":
        return ("auto", "gpu", *sorted(AcceleratorRegistry.available_accelerators()))
    if name == "strategy":
        return ("auto", *StrategyRegistry.available_strategies())
    try:
        annotation = typing.get_type_hints(Trainer.__init__)[name]
    except Exception:  # another Lightning: leave the check to it
        return ()
    # precision: auto is the project's own (mnist_lit.hardware.resolve_precision)
    return ("auto", *_literals(annotation)) if name == "precision" else tuple(_literals(annotation))


def _literals(annotation: Any) -> list[Any]:
    """The values of the ``Literal[...]`` types inside a type annotation."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]


def _choices_text(name: str) -> Callable[[], str]:
    return lambda: "one of " + ", ".join(dict.fromkeys(map(str, _lightning_choices(name))))


@dataclass(frozen=True)
class Rule:
    """The values ``key`` takes: ``check`` tells one, ``allowed`` says which in words."""

    key: str
    check: Callable[[Any], bool]
    #: a callable for words that need an import (Lightning's names), made only for a message
    allowed: str | Callable[[], str]
    nullable: bool = field(default=False, kw_only=True)  # null too: the class's own default

    def accepts(self, value: Any) -> bool:
        return (self.nullable and value is None) or (value is not None and self.check(value))

    def text(self) -> str:
        text = self.allowed() if callable(self.allowed) else self.allowed
        return f"{text}, or null" if self.nullable else text


_PROBABILITY = "a probability in [0, 1), 0 = off"
_INT_1 = "an integer >= 1"
_SEED = f"an integer in [0, {MAX_SEED}]"
_BOOL = "true or false"
_COUNT_OR_FRACTION = "an integer >= 0 (batches) or a float in [0.0, 1.0] (a fraction)"

#: The type and range of every value a user sets. ``data.val_size`` is checked against the data
#: set's size (``_check_val_size``) and ``ckpt_path`` by loading it (``_check_ckpt_path``).
RULES: tuple[Rule, ...] = (
    Rule("seed", _is_seed, _SEED),
    Rule("test", _is_bool, _BOOL),
    Rule("stop_at", lambda v: _positive(v) and v <= 1, "a val/acc in (0, 1]", nullable=True),
    # data
    Rule("data.batch_size", _at_least(1), _INT_1),
    Rule("data.eval_batch_size", _at_least(1), _INT_1),
    Rule("data.split_seed", _is_seed, _SEED),
    Rule("data.shuffle_seed", _is_seed, _SEED),
    Rule("data.mean", lambda v: _is_number(v) and 0 <= v <= 1, "a number in [0, 1] (pixel / 255)"),
    Rule("data.std", _positive, "a number > 0"),
    Rule("data.on_device", _is_bool, _BOOL),
    Rule(
        "data.augment",
        lambda v: isinstance(v, DictConfig),
        "{shift:..,degrees:..,scale:..}",
        nullable=True,
    ),
    Rule("data.augment.shift", lambda v: _is_number(v) and v >= 0, "a number of pixels >= 0"),
    Rule("data.augment.degrees", lambda v: _is_number(v) and v >= 0, "a number of degrees >= 0"),
    Rule("data.augment.scale", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    # model: cnn and mlp
    Rule(
        "model.channels",
        lambda v: _is_list(v, _at_least(1), max_len=4),
        "a list of at most 4 integers >= 1 (each block halves the 28 px image), e.g. [32,64]",
    ),
    Rule("model.convs_per_block", _at_least(1), _INT_1),
    Rule("model.hidden", _at_least(1), _INT_1),
    Rule("model.hidden_sizes", lambda v: _is_list(v, _at_least(1)), "a list of integers >= 1"),
    Rule("model.dropout", lambda v: _is_number(v) and 0 <= v < 1, _PROBABILITY),
    Rule("model.batchnorm", _is_bool, _BOOL),
    Rule("model.width", _positive, "a number > 0 (1.0 = the sizes as given)"),
    # optimizer: adam, adamw, sgd
    Rule("optimizer.lr", _positive, "a number > 0, e.g. 0.001"),
    Rule("optimizer.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    Rule("optimizer.momentum", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    Rule("optimizer.dampening", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    Rule("optimizer.nesterov", _is_bool, _BOOL),
    Rule(
        "optimizer.betas",
        lambda v: _is_list(v, lambda b: _is_number(b) and 0 <= b < 1, 2, 2),
        "two numbers in [0, 1), e.g. [0.9,0.999]",
    ),
    Rule("optimizer.eps", _positive, "a number > 0, e.g. 1e-8"),
    Rule("optimizer.amsgrad", _is_bool, _BOOL),
    # null: torch picks (its per-tensor loops on the CPU)
    Rule("optimizer.fused", _is_bool, _BOOL, nullable=True),
    # scheduler: onecycle, cosine, step
    Rule("scheduler.max_lr", _positive, "a number > 0"),
    Rule("scheduler.pct_start", _is_fraction, "a float in [0.0, 1.0], e.g. 0.25"),
    Rule("scheduler.div_factor", _positive, "a number > 0"),
    Rule("scheduler.final_div_factor", _positive, "a number > 0"),
    Rule("scheduler.anneal_strategy", _one_of(lambda: ("cos", "linear")), "cos or linear"),
    Rule("scheduler.three_phase", _is_bool, _BOOL),
    Rule("scheduler.eta_min", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    Rule("scheduler.step_size", _at_least(1), "an integer >= 1 (epochs)"),
    Rule("scheduler.gamma", _positive, "a number > 0 (the lr is multiplied by it)"),
    Rule("scheduler.T_max", _at_least(1), "an integer >= 1 (steps)"),
    Rule("scheduler.total_steps", _at_least(1), "an integer >= 1 (steps)"),
    # trainer: the arguments of lightning.pytorch.Trainer (null: Lightning's default)
    Rule(
        "trainer.max_epochs",
        lambda v: _is_int(v) and (v >= 1 or v == -1),
        "an integer >= 1 or -1 (no limit)",
        nullable=True,
    ),
    Rule("trainer.min_epochs", _at_least(0), "an integer >= 0", nullable=True),
    Rule(
        "trainer.max_steps", lambda v: _is_int(v) and (v >= 1 or v == -1), "an integer >= 1 or -1"
    ),
    Rule("trainer.min_steps", _at_least(0), "an integer >= 0", nullable=True),
    Rule(
        "trainer.accelerator",
        _one_of(lambda: _lightning_choices("accelerator")),
        _choices_text("accelerator"),
    ),
    Rule(
        "trainer.strategy",
        _one_of(lambda: _lightning_choices("strategy")),
        _choices_text("strategy"),
    ),
    Rule(
        "trainer.devices",
        _is_devices,
        "an integer >= 1, -1 (all), auto, or a list of device indices such as [0,1]",
    ),
    Rule("trainer.num_nodes", _at_least(1), _INT_1),
    Rule(
        "trainer.precision",
        _one_of(lambda: _lightning_choices("precision")),
        _choices_text("precision"),
        nullable=True,
    ),
    Rule(
        "trainer.val_check_interval",
        _is_interval,
        "an integer >= 1 (batches), a float in (0.0, 1.0] (of an epoch), or 'DD:HH:MM:SS'",
        nullable=True,
    ),
    Rule("trainer.check_val_every_n_epoch", _at_least(1), _INT_1, nullable=True),
    *(
        Rule(
            f"trainer.limit_{stage}_batches", _count_or_fraction, _COUNT_OR_FRACTION, nullable=True
        )
        for stage in ("train", "val", "test", "predict")
    ),
    Rule("trainer.overfit_batches", _count_or_fraction, _COUNT_OR_FRACTION),
    Rule(
        "trainer.fast_dev_run",
        lambda v: _is_bool(v) or (_is_int(v) and v >= 0),
        "true, false, or a number of batches >= 0",
    ),
    Rule("trainer.log_every_n_steps", _at_least(0), "an integer >= 0", nullable=True),
    Rule(
        "trainer.num_sanity_val_steps", _at_least(-1), "an integer >= -1 (-1: all)", nullable=True
    ),
    Rule("trainer.accumulate_grad_batches", _at_least(1), _INT_1),
    Rule(
        "trainer.gradient_clip_val",
        lambda v: _is_number(v) and v >= 0,
        "a number >= 0",
        nullable=True,
    ),
    Rule(
        "trainer.gradient_clip_algorithm",
        _one_of(lambda: ("norm", "value")),
        "norm or value",
        nullable=True,
    ),
    Rule("trainer.reload_dataloaders_every_n_epochs", _at_least(0), "an integer >= 0"),
    Rule(
        "trainer.deterministic",
        lambda v: _is_bool(v) or v == "warn",
        "true, false or warn (warn where a kernel has no deterministic version)",
        nullable=True,
    ),
    *(
        Rule(f"trainer.{key}", _is_bool, _BOOL, nullable=True)
        for key in (
            "benchmark",
            "enable_checkpointing",
            "enable_progress_bar",
            "enable_model_summary",
        )
    ),
    *(
        Rule(f"trainer.{key}", _is_bool, _BOOL)
        for key in ("inference_mode", "use_distributed_sampler", "sync_batchnorm", "detect_anomaly")
    ),
    # predict and export
    Rule("batch_size", _at_least(1), _INT_1),
    Rule("threads", _at_least(1), _INT_1, nullable=True),
    Rule("atol", _positive, "a number > 0"),
    Rule("verify", _is_bool, _BOOL),
    Rule(
        "preprocess.box_size",
        lambda v: _is_int(v) and 1 <= v <= 28,
        "an integer in [1, 28]",
        nullable=True,
    ),
    Rule("preprocess.threshold", lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
)

_ABSENT = object()


def _select(cfg: DictConfig, key: str) -> Any:
    """``cfg``'s value at ``key``; ``_ABSENT`` when it has none, or none that resolves here
    (``data.shuffle_seed: ${seed}`` in predict's config, which has no seed and never uses it)."""
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    except InterpolationResolutionError:
        return _ABSENT
    except MissingMandatoryValue:
        raise ConfigError(f"{key} is required: set it with {key}=...") from None


def _shown(value: Any) -> str:
    """A value as a message shows it: ``null``, ``true``, ``'abc'``, ``[1, 2]``."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return repr(value)


def _first_missing_key(cfg: DictConfig, prefix: str = "") -> str | None:
    """The first ``???`` value, found without resolving interpolations (which need Hydra)."""
    for key in cfg:
        if OmegaConf.is_missing(cfg, key):
            return f"{prefix}{key}"
        child = cfg._get_node(key)
        if isinstance(child, DictConfig) and not child._is_interpolation() and key != "hydra":
            found = _first_missing_key(child, f"{prefix}{key}.")
            if found:
                return found
    return None


def validate(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` for the first value that cannot work, naming what it takes."""
    missing = _first_missing_key(cfg)
    if missing:
        raise ConfigError(f"{missing} is required: set it on the command line, {missing}=...")
    _check_arguments(cfg)
    for rule in RULES:
        value = _select(cfg, rule.key)
        if value is not _ABSENT and not rule.accepts(value):
            raise ConfigError(f"{rule.key}={_shown(value)} is invalid: it must be {rule.text()}")
    _check_val_size(cfg)
    _check_nesterov(cfg)
    _check_ckpt_path(cfg)


# ----------------------------------------------------------------------------- the classes built

#: keys of a ``_target_`` node that Hydra's ``instantiate`` reads itself
_INSTANTIATE_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})

#: plain dicts that the code passes on as keyword arguments: their keys are checked like a
#: ``_target_`` node's (``data.augment`` becomes ``RandomAffine(**augment)``)
ARGUMENT_DICTS: dict[str, str] = {"data.augment": "mnist_lit.data.augment.RandomAffine"}

#: config groups whose every entry is a ``_target_`` node (or null, to drop it)
_TARGET_GROUPS = ("callbacks", "logger")


def _target_nodes(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every node with a ``_target_`` (what the code instantiates), with its dotted path.

    Reads the tree without resolving interpolations (some need Hydra's runtime); Hydra's own
    ``hydra`` node is not the program's.
    """
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield path, node
        items = [(key, f"{path}.{key}" if path else str(key)) for key in node if key != "hydra"]
    elif isinstance(node, ListConfig):
        items = [(index, f"{path}[{index}]") for index in range(len(node))]
    else:
        return
    for key, child_path in items:
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation():
            yield from _target_nodes(child, child_path)


def _check_arguments(cfg: DictConfig) -> None:
    """Each ``_target_`` must import, and each key of its node must be an argument it takes."""
    for group in _TARGET_GROUPS:
        entries = cfg.get(group)
        for name in entries if isinstance(entries, DictConfig) else ():
            entry = entries._get_node(name)
            if entry._is_none() or entry._is_interpolation():
                continue
            if not (isinstance(entry, DictConfig) and "_target_" in entry):
                raise ConfigError(
                    f"{group}.{name}={_shown(entry._value())} is invalid: it must be a config "
                    "with a _target_ (the class to build), or null to drop it"
                )
    for path, node in _target_nodes(cfg):
        target = node.get("_target_")
        _check_keys(path, node, _import_target(path, target), target)
    for path, target in ARGUMENT_DICTS.items():
        node = OmegaConf.select(cfg, path, default=None)
        if isinstance(node, DictConfig):
            try:
                obj = _locate(target)
            except ImportError:  # moved or renamed: then the tests say so, users are not blocked
                continue
            _check_keys(path, node, obj, target)


def _import_target(path: str, target: Any) -> Any:
    """The class (or function) a ``_target_`` names, or one line saying why it does not import."""
    try:
        obj = _locate(str(target))
    except Exception as err:
        # "Error loading 'a.B':", 'ModuleNotFoundError("No module named \'a\'")', "Are you sure..."
        lines = str(err).splitlines()
        found = re.fullmatch(r"(\w+)\((['\"])(.*)\2\)", lines[1]) if len(lines) > 1 else None
        reason = f"{found[1]}: {found[3]}" if found else first_line(err)
        raise ConfigError(
            f"{path}._target_={_shown(target)} is invalid: it must name a class that imports "
            f"({reason})"
        ) from None
    if not callable(obj):
        raise ConfigError(
            f"{path}._target_={_shown(target)} is invalid: it names a {type(obj).__name__}, "
            "not a class"
        )
    return obj


def _check_keys(path: str, node: DictConfig, obj: Any, target: str) -> None:
    """One line naming the first key of ``node`` that ``obj`` takes no argument for."""
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):  # no signature to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return  # takes any keyword
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [name for name, p in parameters.items() if p.kind in keyword]
    unknown = [key for key in node if key not in _INSTANTIATE_KEYS and key not in names]
    if not unknown:
        return
    # what a config can set: arguments with a default, or set already (the code fills the rest)
    settable = [
        n for n in names if n in node or parameters[n].default is not inspect.Parameter.empty
    ]
    raise ConfigError(_unknown_key(f"{path}.{unknown[0]}", settable, f"{target} takes"))


def _unknown_key(key: str, known: Sequence[str], what: str) -> str:
    """``unknown config key 'model.dropuot': did you mean 'model.dropout'? <what> <known>``."""
    return f"unknown config key '{key}': {_did_you_mean(key, known)}{what} {', '.join(known)}"


def _did_you_mean(key: str, known: Sequence[str]) -> str:
    """``did you mean 'model.dropout'? `` when a known key is spelled like ``key``'s last part."""
    parent, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1)
    if not close:
        return ""
    return f"did you mean '{parent}.{close[0]}'? " if parent else f"did you mean '{close[0]}'? "


# ----------------------------------------------------------------------------- values that depend


def _check_val_size(cfg: DictConfig) -> None:
    """``data.val_size`` must leave training images: fewer than the data module's train set."""
    value = _select(cfg, "data.val_size")
    if value is _ABSENT:
        return
    target = OmegaConf.select(cfg, "data._target_", default=None)
    total = getattr(_locate(target), "train_total", None) if target else None
    if total is None and not (_is_int(value) and value >= 1):
        raise ConfigError(f"data.val_size={_shown(value)} is invalid: it must be an integer >= 1")
    if total is not None and not (_is_int(value) and 1 <= value < total):
        raise ConfigError(
            f"data.val_size={_shown(value)} is invalid: it must be an integer in [1, {total - 1}] "
            f"(the training set has {total} images; the rest of them train)"
        )


def _check_nesterov(cfg: DictConfig) -> None:
    """SGD refuses Nesterov momentum without momentum, or with dampening."""
    if OmegaConf.select(cfg, "optimizer.nesterov", default=False) is not True:
        return
    momentum = OmegaConf.select(cfg, "optimizer.momentum", default=0)
    dampening = OmegaConf.select(cfg, "optimizer.dampening", default=0)
    if not momentum > 0 or dampening != 0:
        raise ConfigError(
            f"optimizer.nesterov=true needs optimizer.momentum > 0 and optimizer.dampening=0 "
            f"(they are {momentum} and {dampening}): set them, or optimizer.nesterov=false"
        )


#: ``ckpt_path`` values that Lightning's ``Trainer.fit`` looks up itself
_LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def _check_ckpt_path(cfg: DictConfig) -> None:
    """``ckpt_path`` must be a checkpoint this config can use: loadable, of its data set, and
    (when it trains a model) one training can resume from, with weights that fit the model."""
    path = cfg.get("ckpt_path")
    if path is None:
        return
    trains = "model" in cfg  # train.py resumes fitting; eval, predict, export load the model
    if trains and path in _LIGHTNING_CKPT_NAMES:
        return
    from mnist_lit.checkpoints import checkpoint_problem, dataset_of_config  # imports the model

    problem = checkpoint_problem(
        str(path),
        dataset=dataset_of_config(cfg.data) if "data" in cfg else None,
        resume=trains,
        net=OmegaConf.to_container(cfg.model, resolve=True) if trains else None,
    )
    if problem is not None:
        raise ConfigError(problem)


# ----------------------------------------------------------------------------- CLI pre-check


def _combinations(overrides: Sequence[str], limit: int = 16) -> list[list[str]]:
    """Expand sweep overrides (``model=mlp,cnn``) into the override lists of single jobs."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    choices: list[list[str]] = []
    for override in parsed:
        if not override.is_sweep_override():
            choices.append([override.input_line])
        elif override.is_discrete_sweep() and override.value_type.name != "GLOB_CHOICE_SWEEP":
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        # interval sweeps (Optuna) have no value to try here; the sweeper checks them
    jobs = [list(job) for job in itertools.islice(itertools.product(*choices), limit)]
    return jobs or [[]]


def _one_line(err: BaseException) -> str:
    """Hydra's and OmegaConf's errors, cut to one line that names the key and the fix."""
    if isinstance(err, MissingConfigException) and err.options is not None:
        group = (err.missing_cfg_file or "").rsplit("/", 1)
        name = group[-1]
        where = group[0] if len(group) > 1 else "config"
        options = ", ".join(sorted(err.options))
        return f"'{name}' is not an option of '{where}': choose one of {options}"
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override '{err.override}': {err.message.splitlines()[0]}"
    if isinstance(err, MissingMandatoryValue):
        return f"{err.full_key} is required: set it with {err.full_key}=..."
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    cause = err.__cause__
    if cause is not None and str(cause):
        text += " (" + str(cause).splitlines()[0] + ")"
    return text


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="check"):
        return compose(config_name, overrides=overrides)


def _missing_key(err: BaseException) -> str | None:
    """The key of a ``key=value`` override that the config does not have, if that was the error."""
    cause = err.__cause__
    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        return None
    first = str(err).splitlines()[0]  # "Could not override 'model.dropuot'."
    return first.split("'")[1] if first.count("'") >= 2 else cause.full_key


def _unknown_override(config_name: str, overrides: list[str], key: str) -> str:
    """The line for ``key=value`` where the config has no ``key``.

    Under a ``_target_`` node the class's arguments are what may be set: composed again as
    ``+key=value``, ``validate`` names them. Elsewhere: its sibling keys, and how to add a key.
    """
    given = [o for o in overrides if o.split("=", 1)[0] == key]
    plus = [f"+{o}" if o in given else o for o in overrides]
    known: list[str] = []
    try:
        cfg = _compose(config_name, plus)
        parent, _, name = key.rpartition(".")
        siblings = OmegaConf.select(cfg, parent) if parent else cfg
        if isinstance(siblings, DictConfig):
            known = [str(k) for k in siblings if k != name]
        try:
            validate(cfg)
        except ConfigError as err:
            if f"'{key}'" in str(err):  # not an argument of the class: the line names them
                return str(err)
        if isinstance(siblings, DictConfig) and "_target_" in siblings:
            add = f"+{given[0]}" if given else f"+{key}=..."
            target = siblings._target_
            return f"{key} is not in the config yet: add it with '{add}' ({target} takes it)"
    except Exception:  # another error: the line below still names the key
        pass
    return (
        f"unknown config key '{key}': {_did_you_mean(key, known) or 'check its spelling '}"
        f"(`python {config_name}.py --cfg job` lists the keys) or add a new key with '+{key}=...'"
    )


def command_line_error(config_name: str, overrides: list[str]) -> str | None:
    """The one-line error of one job's overrides (composed as Hydra will), or ``None``."""
    try:
        validate(_compose(config_name, overrides))
    except ConfigError as err:
        return str(err)
    except ConfigCompositionException as err:
        key = _missing_key(err)
        return _unknown_override(config_name, overrides, key) if key else _one_line(err)
    except (OverrideParseException, OmegaConfBaseException) as err:
        return _one_line(err)
    return None


def check_command_line(config_name: str, argv: Sequence[str]) -> None:
    """Compose the config the way Hydra will and validate it; exit with one line on an error.

    Runs before Hydra so that no run dir is created and no data is fetched for a bad command.
    Flags that only print (``--help``, ``--cfg``, ``--info``) are left to Hydra.
    """
    from hydra._internal.utils import get_args_parser  # Hydra's own command-line grammar

    args, _ = get_args_parser().parse_known_args(list(argv))
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return
    config_name = args.config_name or config_name
    try:
        jobs = _combinations(args.overrides)
    except OverrideParseException as err:
        exit_with_error(_one_line(err))
    for overrides in jobs:
        error = command_line_error(config_name, overrides)
        if error is not None:
            exit_with_error(error)


def exit_with_error(message: str) -> NoReturn:
    """End a command as every entry point does on bad input: one ``error:`` line, exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def validate_or_exit(cfg: DictConfig) -> None:
    """``validate`` for code that runs inside Hydra (each job of a sweep checks itself)."""
    try:
        validate(cfg)
    except ConfigError as err:
        exit_with_error(str(err))
