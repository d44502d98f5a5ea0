"""Config plumbing: where ``conf/`` is, checks that fail fast with one line, and the config tree.

A typo (``model.dropuot=0.5``), an unknown option (``model=cnnn``) or a bad value
(``optimizer.lr=-1``) must stop the program before any work, with one line that names the key
and the fix, not a Hydra or Lightning traceback.
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


#: (key, check, what a valid value is). Keys absent from a config are skipped.
_RULES: list[tuple[str, Callable[[Any], bool], str]] = [
    ("seed", _is_int, "an integer"),
    ("optimizer.lr", lambda v: _is_number(v) and v > 0, "a number > 0, e.g. 0.001"),
    ("optimizer.weight_decay", lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    ("optimizer.momentum", lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("model.dropout", lambda v: _is_number(v) and 0 <= v < 1, "a probability in [0, 1), 0 = off"),
    ("model.batchnorm", lambda v: isinstance(v, bool), "true or false"),
    ("data.batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("data.eval_batch_size", lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    ("data.val_size", lambda v: _is_int(v) and 1 <= v < 60_000, "an integer in [1, 60000)"),
    ("data.mean", _is_number, "a number"),
    ("data.std", lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("trainer.max_epochs", lambda v: _is_int(v) and (v >= 1 or v == -1), "an integer >= 1"),
]


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
    """Raise ``ConfigError`` for the first value that cannot work."""
    missing = _first_missing_key(cfg)
    if missing:
        raise ConfigError(f"{missing} is required: set it on the command line, {missing}=...")
    for key, is_valid, allowed in _RULES:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except MissingMandatoryValue:
            raise ConfigError(f"{key} is required: set it with {key}=...") from None
        if value is not None and not is_valid(value):
            raise ConfigError(f"{key}={value!r} is invalid: it must be {allowed}")


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
    cause = err.__cause__
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        first = str(err).splitlines()[0]  # "Could not override 'model.dropuot'."
        key = first.split("'")[1] if first.count("'") >= 2 else cause.full_key
        return (
            f"unknown config key '{key}': check its spelling "
            f"(`python train.py --cfg job` lists the keys) or add a new key with '+{key}=...'"
        )
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override '{err.override}': {err.message.splitlines()[0]}"
    if isinstance(err, MissingMandatoryValue):
        return f"{err.full_key} is required: set it with {err.full_key}=..."
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if cause is not None and str(cause):
        text += " (" + str(cause).splitlines()[0] + ")"
    return text


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
        for overrides in jobs:
            with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="check"):
                cfg = compose(config_name, overrides=overrides)
            validate(cfg)
    except ConfigError as err:
        _exit(str(err))
    except (OverrideParseException, ConfigCompositionException, OmegaConfBaseException) as err:
        _exit(_one_line(err))


def _exit(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def validate_or_exit(cfg: DictConfig) -> None:
    """``validate`` for code that runs inside Hydra (each job of a sweep checks itself)."""
    try:
        validate(cfg)
    except ConfigError as err:
        _exit(str(err))
