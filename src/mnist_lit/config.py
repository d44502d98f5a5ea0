"""Config plumbing: where ``conf/`` is, composing a config, and checking it before any work.

``check_command_line`` composes each job of a command line as Hydra will and checks it against
``schema.py``; the first problem becomes a ``UserError``: one line naming the key and the fix.
Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import difflib
import itertools
import shutil
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    InterpolationResolutionError,
    OmegaConfBaseException,
)
from pydantic import BaseModel, ValidationError

from mnist_lit.compat import hydra_argument_parser
from mnist_lit.errors import UserError
from mnist_lit.schema import OPTIONS, TARGETS, whole_config_problem


def _find_project_root() -> Path:
    """The repo root (holds ``conf/``): next to ``src/`` for a clone, else the working dir."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "conf" / "train.yaml").is_file():
            return parent
    return Path.cwd()


PROJECT_ROOT = _find_project_root()
CONFIG_DIR = PROJECT_ROOT / "conf"
#: tells a DDP rank that Lightning started by re-running train.py which job dir it joins
JOB_DIR_ENV = "MNIST_LIT_DDP_JOB_DIR"

#: the run dirs this process has claimed, by the path asked for
_CLAIMED: dict[str, str] = {}
#: the dirs a dry run would get are named, not made (``dirs_named_only``)
_DRY_RUN: list[bool] = []


def unique_dir(path: str, mode: str = "RUN") -> str:
    """``path``, or ``path_1``, ``path_2``... : the first that this process could create.

    ``mkdir`` is atomic, so runs started in the same second (whose time-stamped dirs are the
    same) each get a dir of their own. The same path asked again gets the same dir: Hydra
    resolves its run dir more than once. ``mode`` is the Hydra mode the dir is for (``RUN`` for
    ``hydra.run.dir``, ``MULTIRUN`` for ``hydra.sweep.dir``): asked in the other mode (Lightning
    reads a sweep job's run dir to start DDP ranks), nothing is claimed.
    """
    asked_in = getattr(HydraConfig.get().mode, "name", None) if HydraConfig.initialized() else None
    if _DRY_RUN or (asked_in is not None and asked_in != mode):
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


OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)


def remove_unstarted_run_dir(run_dir: str) -> None:
    """Remove ``run_dir`` if this process claimed it and its run never started (no checkpoint,
    no results): a value refused when the trainer or model is built leaves no empty run."""
    path = Path(run_dir).resolve()
    claimed = path in {Path(p).resolve() for p in _CLAIMED.values()}
    started = (path / "checkpoints").exists() or any(path.glob("*.json"))
    if claimed and path.is_dir() and not started:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def dirs_named_only() -> Iterator[None]:
    """Within: ``unique_dir`` names the dir a run would get and creates nothing (a dry run)."""
    _DRY_RUN.append(True)
    try:
        yield
    finally:
        _DRY_RUN.pop()


# cached in the config, which Hydra copies to each job of a sweep (the launcher may run them in
# other processes): every job resolves the sweep dir its launcher claimed
OmegaConf.register_new_resolver("unique_dir", unique_dir, replace=True, use_cache=True)


# ----------------------------------------------------------------------------- checking a config


def validate(cfg: DictConfig) -> None:
    """Raise a ``UserError`` for the first value of ``cfg`` that cannot work."""
    missing = _first_missing_key(cfg)
    if missing:
        raise UserError(f"{missing} is required: set it on the command line, {missing}=...")
    task = str(cfg.get("task_name"))
    # unresolved: the run dir (${hydra:...}) is known only once the run starts
    problem = whole_config_problem(task, OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
    if problem:
        raise UserError(problem)
    options = OPTIONS.get(task)
    if options is not None:
        _check("", options, _values(cfg))
    for path, node in _target_nodes(cfg):
        schema = TARGETS.get(str(node.get("_target_")))
        if schema is not None:
            values = {k: v for k, v in _values(node).items() if not k.startswith("_")}
            _check(f"{path}.", schema, values)


def _check(prefix: str, schema: type[BaseModel], values: dict[str, Any]) -> None:
    """Validate ``values`` (the keys a config has) against ``schema``; one line on the first error.

    Keys a config leaves out are not required here: the class's defaults apply.
    """
    try:
        schema.model_validate(values)
    except ValidationError as err:
        problems = [e for e in err.errors() if e["type"] != "missing"]
        if problems:
            raise UserError(_explain(prefix, schema, values, problems)) from None


def _explain(
    prefix: str, schema: type[BaseModel], values: dict[str, Any], problems: list[Any]
) -> str:
    """``model.dropout=1.5 is invalid: Input should be less than 1`` for the first problem."""
    first = problems[0]
    key, value = _walk(values, first["loc"])
    if first["type"] == "extra_forbidden":
        known = list(schema.model_fields)
        return f"unknown config key '{prefix}{key}': {_did_you_mean(prefix + key, known)}" + (
            f"{prefix.rstrip('.') or 'it'} takes {', '.join(known)}"
        )
    same_key = [p for p in problems if _walk(values, p["loc"])[0] == key]
    reasons = " or ".join(dict.fromkeys(p["msg"].removeprefix("Value error, ") for p in same_key))
    name = f"{prefix}{key}" if key else prefix.rstrip(".")
    shown = f"={_shown(value)}" if key else ""
    return f"{name}{shown} is invalid: {reasons}"


def _walk(values: Any, loc: Sequence[Any]) -> tuple[str, Any]:
    """The dotted key a pydantic error location names in ``values``, and its value."""
    parts: list[str] = []
    for part in loc:
        if not (isinstance(values, dict) and part in values):
            break
        parts.append(str(part))
        values = values[part]
    return ".".join(parts), values


def _values(node: DictConfig) -> dict[str, Any]:
    """The resolved values of a node, without the keys that only Hydra's runtime resolves."""
    values = {}
    for key in node:
        if key == "hydra":
            continue
        try:
            value = node[key]
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
        except InterpolationResolutionError:  # ${hydra:runtime.output_dir}: set when it runs
            continue
        values[str(key)] = value
    return values


def plain_dict(node: DictConfig) -> dict[str, Any]:
    """A config node as plain, resolved data (what checkpoints and loggers store)."""
    return cast(dict[str, Any], OmegaConf.to_container(node, resolve=True))


def _target_nodes(node: Any, path: str = "") -> list[tuple[str, DictConfig]]:
    """Every node with a ``_target_`` (what the code builds) and its dotted path."""
    found: list[tuple[str, DictConfig]] = []
    if isinstance(node, DictConfig):
        if "_target_" in node:
            found.append((path, node))
        keys: list[str | int] = [str(k) for k in node if k != "hydra"]
    elif isinstance(node, ListConfig):
        keys = list(range(len(node)))
    else:
        return found
    for key in keys:
        if not OmegaConf.is_interpolation(node, key) and not OmegaConf.is_missing(node, key):
            found += _target_nodes(node[key], f"{path}.{key}" if path else str(key))
    return found


def _first_missing_key(node: DictConfig, prefix: str = "") -> str | None:
    """The first ``???`` value, found without resolving interpolations."""
    for key in map(str, node):
        if OmegaConf.is_missing(node, key):
            return f"{prefix}{key}"
        if key != "hydra" and not OmegaConf.is_interpolation(node, key):
            child = node[key]
            found = (
                _first_missing_key(child, f"{prefix}{key}.")
                if isinstance(child, DictConfig)
                else None
            )
            if found:
                return found
    return None


def _shown(value: Any) -> str:
    """A value as a command line writes it: ``null``, ``true``, ``'abc'``, ``[1, 2]``."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return repr(value)


def _did_you_mean(key: str, known: Sequence[str]) -> str:
    """``did you mean 'dropout'? `` when a known key is spelled like ``key``'s last part."""
    parent, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, [str(k) for k in known], n=1)
    if not close:
        return ""
    return f"did you mean '{parent}.{close[0]}'? " if parent else f"did you mean '{close[0]}'? "


# ----------------------------------------------------------------------------- the command line


def compose_config(
    config_name: str, overrides: Sequence[str], with_hydra: bool = False
) -> DictConfig:
    """The config ``python <config_name>.py <overrides>`` runs with (Hydra's runtime keys unset);
    ``with_hydra``: with Hydra's own node (``hydra.help``, ``hydra.run``...) too."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name=config_name):
        return compose(config_name, overrides=list(overrides), return_hydra_config=with_hydra)


def help_text(config_name: str, overrides: Sequence[str]) -> str:
    """What ``--help`` prints: ``hydra.help.template`` filled in as Hydra fills it.

    Hydra lists the config groups by composing a config per group (over a second on 2 cores);
    the groups are the folders of ``conf/`` and their options the YAML files in them, so they
    are read from there. The composed config is the one these overrides give.
    """
    with overrides_checked(config_name, overrides):
        cfg = compose_config(config_name, overrides, with_hydra=True)
    template = string.Template(str(cfg.hydra.help.template))
    with open_dict(cfg):
        del cfg["hydra"]
    return template.safe_substitute(
        APP_CONFIG_GROUPS=config_groups(), CONFIG=OmegaConf.to_yaml(cfg)
    )


def config_groups() -> str:
    """``group: option, option`` per line, for each folder of ``conf/`` but Hydra's own."""
    lines = []
    for folder in sorted(p for p in CONFIG_DIR.rglob("*") if p.is_dir()):
        group = folder.relative_to(CONFIG_DIR).as_posix()
        options = sorted(p.stem for p in folder.glob("*.yaml"))
        if options and group.split("/")[0] != "hydra":
            lines.append(f"{group}: {', '.join(options)}\n")
    return "".join(lines)


def check_command_line(config_name: str, argv: Sequence[str]) -> list[DictConfig]:
    """Compose each job of ``argv`` as Hydra will and check it; a ``UserError`` on the first bad.

    Runs before Hydra, so a bad command makes no run dir and fetches no data. Flags that only
    print (``--help``, ``--cfg``, ``--info``) are left to Hydra. Returns the jobs' configs.
    """
    args, _ = hydra_argument_parser().parse_known_args(list(argv))
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return []
    config_name = args.config_name or config_name
    check_run_dirs(args.overrides)
    configs = []
    for overrides in jobs(args.overrides):
        with overrides_checked(config_name, overrides):
            configs.append(compose_config(config_name, overrides))
            validate(configs[-1])
    return configs


def check_run_dirs(overrides: Sequence[str]) -> None:
    """An empty ``hydra.run.dir`` or ``hydra.sweep.dir`` would run in the current folder."""
    for override in overrides:
        key, _, value = override.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and not value.strip():
            raise UserError(f"{key} is empty: pass a folder for the run, or leave it out")


@contextmanager
def overrides_checked(config_name: str, overrides: Sequence[str]) -> Iterator[None]:
    """Turn Hydra's and OmegaConf's refusals of a command line into one ``UserError`` line."""
    try:
        yield
    except ConfigCompositionException as err:
        raise UserError(_composition_error(config_name, list(overrides), err)) from None
    except (OverrideParseException, OmegaConfBaseException) as err:
        raise UserError(_hydra_error(err)) from None
    except ValueError:  # Hydra's for a group set to null
        nulls = [o.split("=")[0] for o in overrides if o.endswith("=null")]
        groups = [key for key in nulls if (CONFIG_DIR / key).is_dir()]
        if not groups:
            raise
        options = ", ".join(sorted(p.stem for p in (CONFIG_DIR / groups[0]).glob("*.yaml")))
        raise UserError(f"{groups[0]}=null: choose one of {options}") from None


def jobs(overrides: Sequence[str], limit: int = 16) -> list[list[str]]:
    """The override lists of a sweep's jobs (``model=mlp,cnn`` -> two), the first ``limit``."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as err:
        raise UserError(_hydra_error(err)) from None
    choices: list[list[str]] = []
    for override in parsed:
        if not override.is_sweep_override():
            choices.append([str(override.input_line)])
        elif (
            override.is_discrete_sweep()
            and getattr(override.value_type, "name", None) != "GLOB_CHOICE_SWEEP"
        ):
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        # an interval (Optuna's search space) has no value to try: the sweeper checks it
    return [list(job) for job in itertools.islice(itertools.product(*choices), limit)] or [[]]


def _composition_error(config_name: str, overrides: list[str], err: Exception) -> str:
    """An override of a key the config does not have gets its siblings; others, Hydra's line."""
    cause = err.__cause__
    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        return _hydra_error(err)
    first = str(err).splitlines()[0]  # "Could not override 'model.dropuot'."
    key = first.split("'")[1] if first.count("'") >= 2 else str(cause.full_key)
    others = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != key]
    parent = key.rpartition(".")[0]
    try:
        composed = compose_config(config_name, others)
        siblings = OmegaConf.select(composed, parent) if parent else composed
    except Exception:  # another error in the rest: the line below still names the key
        siblings = None
    known = [str(k) for k in siblings] if isinstance(siblings, DictConfig) else []
    hint = _did_you_mean(key, known) or "check its spelling "
    return (
        f"unknown config key '{key}': {hint}(`python {config_name}.py --cfg job` lists the "
        f"keys), or add a new key with '+{key}=...'"
    )


def _hydra_error(err: Exception) -> str:
    """Hydra's and OmegaConf's errors cut to one line that names the key or option."""
    if isinstance(err, MissingConfigException) and err.options is not None:
        where, _, name = (err.missing_cfg_file or "").rpartition("/")
        options = ", ".join(sorted(err.options))
        return f"'{name}' is not an option of '{where or 'config'}': choose one of {options}"
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override '{err.override}': {err.message.splitlines()[0]}"
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    if err.__cause__ is not None and str(err.__cause__):
        text += f" ({str(err.__cause__).splitlines()[0]})"
    return text
