"""The config: where ``conf/`` is, its resolvers, and the check of its values before any work.

``check(cfg)`` refuses the first value that cannot work, in one line naming the key: types and
ranges come from the pydantic models of ``schema.py``, found by each node's ``_target_``. A class
with no model there (a network you add) checks its own arguments when it is built, and
``train.py`` reports that as one line too. Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import difflib
import itertools
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from pydantic import BaseModel, ValidationError

from mnist_lit.errors import UserError
from mnist_lit.schema import OPTIONS, TARGETS, Options

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


def gpus_per_task(accelerator: str | None, tasks: int) -> int | None:
    """``${gpus_per_task:<trainer.accelerator>,<tasks>}``: how many GPUs a job of ``tasks``
    processes asks a scheduler for: one per process, none when the trainer runs on the CPU.

    ``auto`` asks for them too: on a cluster it means "a GPU when the node has one", and a job
    that asked for none would never get one (``trainer=cpu`` is the way to ask for none).
    """
    return None if str(accelerator).lower() == "cpu" else tasks


OmegaConf.register_new_resolver("gpus_per_task", gpus_per_task, replace=True)


def log_dir() -> str:
    """``paths.log_dir`` as the train config composes it (``conf/local/`` included): where
    ``make tensorboard`` and ``make mlflow`` look."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return str(compose("train").paths.log_dir)


def plain_dict(node: DictConfig) -> dict[str, Any]:
    """A config node as plain, resolved data (what checkpoints and loggers store)."""
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


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
    missing = [str(k) for k in cfg if k != "hydra" and OmegaConf.is_missing(cfg, k)]
    if missing:
        raise UserError(f"{missing[0]} is required: set it on the command line, {missing[0]}=...")
    for group in required:
        if not cfg.get(group):
            raise UserError(f"{group} is required (set to null or deleted): {group}=<option>")
        if group != "paths" and "_target_" not in cfg[group]:
            raise UserError(f"{group}._target_ is required: choose a {group} with {group}=<option>")
    values = _resolved(cfg)
    _check("", options, values, whole=True)
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


def _check(
    prefix: str, model: type[BaseModel], values: dict[str, Any], whole: bool = False
) -> None:
    """Validate the keys ``values`` has (defaults live in the YAML and the classes); ``whole``:
    every key of the model must be there (a command's own keys: one deleted is missing)."""
    try:
        model.model_validate(values)
    except ValidationError as err:
        problems = [e for e in err.errors() if whole or e["type"] != "missing"]
        if not problems:
            return
        first = problems[0]
        if first["type"] == "missing":
            key = ".".join(str(part) for part in first["loc"])
            raise UserError(f"{prefix}{key} is required: set it, {prefix}{key}=...") from None
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
    chosen = values.get("callbacks") or {}
    if not values.get("logger") and isinstance(chosen.get("lr_monitor"), dict):
        raise UserError(
            "callbacks.lr_monitor logs the learning rate, which needs a logger: choose one "
            "(logger=tensorboard) or set callbacks.lr_monitor=null"
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
