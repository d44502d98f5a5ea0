"""Load a ``LitClassifier`` checkpoint safely, check it fits the config; write them atomically.

A checkpoint is data: it is read weights-only (tensors and plain values, no pickled code), the
classes its hyper-parameters name (``_target_``) are looked up in an allow-list, never imported,
and nothing else in them may be resolved or called. Every failure is a ``UserError`` naming the
file and the fix; ``checkpoint_problem`` gives that line without raising.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import pkgutil
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict
from torch import nn

from mnist_lit import models
from mnist_lit.classifier import LitClassifier
from mnist_lit.config import plain_dict
from mnist_lit.data.download import DatasetSpec
from mnist_lit.errors import UserError, checkpoint_file, first_line


def _classes(module: Any, base: type | tuple[type, ...]) -> dict[str, type]:
    """``{"<module>.<name>": class}`` of the classes of ``module`` that derive from ``base``."""
    found = {name: getattr(module, name) for name in dir(module)}
    return {
        f"{module.__name__}.{name}": cls
        for name, cls in found.items()
        if isinstance(cls, type) and issubclass(cls, base)
    }


def allowed_class(key: str, target: object) -> type | None:
    """The class a checkpoint's ``net``, ``optimizer`` or ``scheduler`` may name by ``target``:
    a network of a module of ``mnist_lit.models``, or one of torch's optimizers and schedules.
    Only a module of the project's own ``models`` package is ever imported by that name."""
    if key != "net":
        return ALLOWED_TARGETS[key].get(str(target))
    module, _, name = str(target).rpartition(".")
    ours = {m.name for m in pkgutil.iter_modules(models.__path__, prefix=f"{models.__name__}.")}
    if module not in ours:
        return None
    cls = getattr(importlib.import_module(module), name, None)
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


#: the optimizers and schedules a checkpoint's hyper-parameters may name, by ``_target_``:
#: looked up here, never imported by a name the checkpoint chooses
ALLOWED_TARGETS: dict[str, dict[str, type]] = {
    "optimizer": _classes(torch.optim, torch.optim.Optimizer),
    "scheduler": _classes(
        torch.optim.lr_scheduler,
        (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
    ),
}
#: how the refusal names each allow-list
_ALLOWED_WHERE = {
    "net": "mnist_lit.models",
    "optimizer": "torch.optim",
    "scheduler": "torch.optim.lr_scheduler",
}


#: how every "not a checkpoint of this project" message ends
USE_OURS = "pass one that train.py saved (<run dir>/checkpoints/*.ckpt)"


def _not_ours(path: str | Path, why: str) -> UserError:
    return UserError(f"checkpoint {path} is not a LitClassifier checkpoint: {why}; {USE_OURS}")


def spec_of_config(data_cfg: DictConfig) -> DatasetSpec | None:
    """The ``DatasetSpec`` of the data module a data config builds (``None`` if it has none)."""
    spec = getattr(get_class(data_cfg._target_), "spec", None)
    return spec if isinstance(spec, DatasetSpec) else None


def dataset_of_config(data_cfg: DictConfig) -> str | None:
    """The data set a data config selects (``mnist``, ``fashion_mnist``), when it says."""
    spec = spec_of_config(data_cfg)
    return spec.name if spec is not None else None


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded weights-only; a ``UserError`` for a bad file."""
    path = checkpoint_file(ckpt_path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # random bytes, a truncated file, objects weights_only refuses
        raise _not_ours(path, _unreadable(path, err)) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        what = "a plain state_dict" if _is_state_dict(checkpoint) else type(checkpoint).__name__
        raise _not_ours(path, f"it is {what}, with no 'state_dict' and 'hyper_parameters'")
    return checkpoint


def trained_on(checkpoint: dict[str, Any]) -> str | None:
    """The data set a checkpoint was trained on, or ``None`` when it does not say."""
    hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    dataset = hparams.get("dataset") if isinstance(hparams, dict) else None
    return dataset if isinstance(dataset, str) else None


def check_dataset(
    checkpoint: dict[str, Any], selected: str, ckpt_path: str | Path | None = None
) -> None:
    """One line when the checkpoint was trained on another data set than ``data=<selected>``.

    A checkpoint that does not say (from before data sets were recorded, or fitted without a
    data module) passes: it cannot be checked.
    """
    dataset = trained_on(checkpoint)
    if dataset is not None and dataset != selected:
        name = f"checkpoint {ckpt_path}" if ckpt_path is not None else "checkpoint"
        raise UserError(
            f"{name} was trained on {dataset}, but data={selected} is selected: pass data={dataset}"
        )


def check_resumable(checkpoint: dict[str, Any], ckpt_path: str | Path) -> None:
    """One line when training cannot go on from the checkpoint (it holds the weights only)."""
    if "optimizer_states" not in checkpoint:
        raise UserError(
            f"checkpoint {ckpt_path} holds the weights only (no optimizer state), so training "
            "cannot resume from it: pass <run dir>/checkpoints/last.ckpt, or ckpt_path=null to "
            "start fresh"
        )


def check_network(
    checkpoint: dict[str, Any], net: Mapping[str, Any], ckpt_path: str | Path
) -> None:
    """One line when the checkpoint's weights (names and shapes) do not fit the network ``net``
    configures, naming the settings it was trained with (``dropout=0.2`` for ``0.1`` fits)."""
    built = instantiate(dict(net))
    wanted = {f"net.{k}": tuple(v.shape) for k, v in built.state_dict().items()}
    state = checkpoint["state_dict"]
    held = {k: tuple(v.shape) for k, v in state.items() if k.startswith("net.")}
    if held == wanted:
        return
    trained = dict(checkpoint.get("hyper_parameters", {}).get("net") or {})
    target, selected = trained.pop("_target_", "?"), net.get("_target_")
    if target != selected:
        settings = ", ".join(f"{k}={_override_value(v)}" for k, v in trained.items())
        problem = f"holds a {target}({settings}), not the {selected} the model config builds"
        fix = "select that network"
    else:  # the settings it was trained with (defaults included) that the config changes
        trained = {**_defaults(built), **trained}
        changed = [
            f"model.{k}={_override_value(v)}"
            for k, v in trained.items()
            if _override_value(net.get(k, v)) != _override_value(v)
        ]
        problem = f"holds a {target} with other layers than the model config's"
        fix = f"pass {' '.join(changed)}" if changed else "train with the code that saved it"
    raise UserError(f"checkpoint {ckpt_path} {problem}: {fix}, or ckpt_path=null to start fresh")


def _defaults(obj: object) -> dict[str, Any]:
    """The default arguments of ``obj``'s class."""
    parameters = inspect.signature(type(obj)).parameters.values()
    return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}


def _override_value(value: object) -> str:
    """``value`` as a command-line override writes it: ``[16,32]``, ``true``, ``0.1``."""
    return json.dumps(value, separators=(",", ":"))


def build_model(checkpoint: dict[str, Any], ckpt_path: str | Path = "checkpoint") -> LitClassifier:
    """A ``LitClassifier`` in eval mode from a checkpoint read by ``read_checkpoint``."""
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), dict):
        raise _not_ours(
            ckpt_path, "it has no 'net' hyper-parameter (a checkpoint of another LightningModule?)"
        )
    for key in _ALLOWED_WHERE:
        config = hparams.get(key)
        if config is not None or key != "scheduler":
            _check_target(key, config, ckpt_path)
    if not isinstance(hparams.get("num_classes", 10), int):
        raise _not_ours(ckpt_path, "its num_classes is not an integer")
    names = ("net", "optimizer", "scheduler", "num_classes")
    try:
        model = LitClassifier(**{k: hparams[k] for k in names if k in hparams})
    except Exception as err:  # arguments the network does not take
        reason = first_line(err, skip="Error in call to target")
        raise _not_ours(ckpt_path, f"cannot build its network ({reason})") from None
    try:
        result = model.load_state_dict(checkpoint["state_dict"], strict=False)
    except Exception as err:  # weights of another shape, or not tensors
        reason = first_line(err, skip="Error(s) in loading state_dict")
        raise _not_ours(ckpt_path, f"its weights do not fit its network ({reason})") from None
    if result.missing_keys or result.unexpected_keys:
        keys = result.missing_keys or result.unexpected_keys
        what = "lacks" if result.missing_keys else "has unexpected"
        listed = f"{', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
        raise _not_ours(
            ckpt_path,
            f"its weights do not fit its network: it {what} {len(keys)} tensors ({listed})",
        )
    return model.eval()


def load_checkpoint(
    ckpt_path: str | Path, dataset: str | None = None, data_cfg: DictConfig | None = None
) -> LitClassifier:
    """Load a LitClassifier in eval mode; with ``dataset``, refuse one trained on another set.

    With ``data_cfg`` (a data config), its data set is the one checked, and its ``mean`` and
    ``std`` are set to the ones the network was trained with: a model fed other statistics
    than its training's scores at chance.

    Raises:
        UserError: missing or unreadable file, not a LitClassifier checkpoint, code it
            may not run, or another data set. The message is one line.
    """
    checkpoint = read_checkpoint(ckpt_path)
    if dataset is None and data_cfg is not None:
        dataset = dataset_of_config(data_cfg)
    if dataset is not None:
        check_dataset(checkpoint, dataset, ckpt_path)
    model = build_model(checkpoint, ckpt_path)
    if data_cfg is not None:
        use_trained_normalization(checkpoint, data_cfg, ckpt_path)
    return model


def trained_normalization(
    checkpoint: dict[str, Any], ckpt_path: str | Path = "checkpoint"
) -> dict[str, float] | None:
    """The ``mean`` and ``std`` the network was trained with (saved by our data module), or
    None when the checkpoint records none. A std of 0 or a value that is not finite would turn
    every input into nan or inf: refused."""
    hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    trained = {k: hparams.get(k) if isinstance(hparams, dict) else None for k in ("mean", "std")}
    if all(v is None for v in trained.values()):
        return None
    numbers = {
        k: float(v)
        for k, v in trained.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    if len(numbers) < 2 or not all(map(math.isfinite, numbers.values())) or numbers["std"] <= 0:
        raise UserError(
            f"checkpoint {ckpt_path} records mean={trained['mean']} std={trained['std']}, which "
            "cannot normalize an input (a finite mean and a std above 0): it was not saved by "
            "this project's training; use one that was"
        )
    return numbers


def check_normalization(
    checkpoint: dict[str, Any], data: Mapping[str, Any], ckpt_path: str | Path
) -> None:
    """One line when training would go on from the checkpoint with another ``mean`` or ``std``
    than its network learned with (every input shifted: the weights it learned no longer fit)."""
    trained = trained_normalization(checkpoint, ckpt_path)
    if trained is None:
        return
    differ = [k for k, v in trained.items() if k in data and float(data[k]) != v]
    if differ:
        fix = " ".join(f"data.{k}={trained[k]}" for k in trained)
        raise UserError(
            f"checkpoint {ckpt_path} was trained with "
            + " ".join(f"{k}={trained[k]}" for k in differ)
            + f", not the config's {' '.join(f'{k}={data[k]}' for k in differ)}: pass {fix}, "
            "or ckpt_path=null to start fresh"
        )


def use_trained_normalization(
    checkpoint: dict[str, Any], data_cfg: DictConfig, ckpt_path: str | Path = "checkpoint"
) -> None:
    """Set ``data_cfg.mean`` and ``std`` to the checkpoint's, saying so when they differ."""
    trained = trained_normalization(checkpoint, ckpt_path)
    if trained is None:
        return  # fitted without our data module: nothing to go by, the config's stand
    configured = {k: data_cfg.get(k) for k in trained}
    if configured != trained:
        print(
            f"[mnist-lit] normalizing with the checkpoint's mean={trained['mean']} "
            f"std={trained['std']} (trained with them), not the config's "
            f"mean={configured['mean']} std={configured['std']}"
        )
    with open_dict(data_cfg):
        data_cfg.mean, data_cfg.std = trained["mean"], trained["std"]


def checkpoint_problem(
    ckpt_path: str | Path,
    *,
    dataset: str | None = None,
    resume: bool = False,
    net: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> str | None:
    """Why ``ckpt_path`` cannot be used, as one line with the fix; ``None`` when it can.

    It loads, builds its model and takes its weights, and (when asked) was trained on
    ``dataset``, can resume training, fits the network ``net`` configures and was trained with
    the ``mean`` and ``std`` of the ``data`` config. It reads the file
    and builds the model on the CPU, nothing else: quick enough to check before any work.
    """
    try:
        checkpoint = read_checkpoint(ckpt_path)
        if dataset is not None:
            check_dataset(checkpoint, dataset, ckpt_path)
        build_model(checkpoint, ckpt_path)
        if data is not None:
            check_normalization(checkpoint, data, ckpt_path)
        else:
            trained_normalization(checkpoint, ckpt_path)
        if resume:
            check_resumable(checkpoint, ckpt_path)
        if net is not None:
            check_network(checkpoint, net, ckpt_path)
    except UserError as err:
        return str(err)
    return None


def _check_target(key: str, config: object, ckpt_path: str | Path) -> None:
    """Refuse a hyper-parameter that would make building the model run code it does not name
    by an allowed class: another ``_target_``, or anything Hydra resolves or acts on."""
    target = config.get("_target_") if isinstance(config, dict) else None
    if not isinstance(config, dict) or allowed_class(key, target) is None:
        where = _ALLOWED_WHERE[key]
        why = f"its {key} names {target!r}, not a class of {where} (refusing to run code it names)"
        raise _not_ours(ckpt_path, why)
    arguments = {k: v for k, v in config.items() if k not in ("_target_", "_partial_")}
    found = _not_plain_data(arguments) or _not_plain_data(config.get("_partial_", False), bool)
    if found:
        raise _not_ours(ckpt_path, f"its {key} holds {found}; a checkpoint is data, refusing it")


def _not_plain_data(value: object, scalar: type | tuple[type, ...] = (str, int, float)) -> str:
    """What in ``value`` is not plain data that Hydra passes on untouched ('' when all is).

    Hydra resolves ``${...}`` (interpolations and resolvers such as ``oc.create``, which can
    build a node that names code) and acts on keys like ``_target_`` and ``_args_``, at any depth.
    """
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or "${" in key:
                return f"the key {key!r}"
            if key.startswith("_") and key.endswith("_"):
                return f"the Hydra key {key!r} (code to call or a directive)"
            if found := _not_plain_data(item, scalar):
                return found
        return ""
    if isinstance(value, (list, tuple)):
        return next((found for item in value if (found := _not_plain_data(item, scalar))), "")
    if isinstance(value, str) and "${" in value:
        return f"an interpolation ({value[:60]!r}), which Hydra would resolve"
    if value is None or isinstance(value, scalar):
        return ""
    return f"a value of type {type(value).__name__}"


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words."""
    text = str(err)
    # "Unsupported global: GLOBAL a.B was not..." or "unsupported GLOBAL posix.system whose..."
    refused = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", text, re.IGNORECASE)
    if refused:
        return f"it holds a Python object ({refused[1]}), which a weights-only load refuses"
    if path.stat().st_size == 0:
        return "the file is empty"
    with open(path, "rb") as f:
        starts_as_zip = f.read(4) == b"PK\x03\x04"
    if starts_as_zip and not zipfile.is_zipfile(path):  # torch's format is a zip file
        return "the file is truncated or damaged (its zip directory is missing)"
    return "it is not a PyTorch checkpoint file (torch.load cannot read it)"


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def check_ckpt_path(cfg: DictConfig) -> None:
    """``ckpt_path`` must be a checkpoint training can go on from: of this data set, with the
    optimizer's state, and weights that fit the configured network."""
    if not cfg.get("ckpt_path"):
        return
    problem = checkpoint_problem(
        str(cfg.ckpt_path),
        dataset=dataset_of_config(cfg.data),
        resume=True,
        net=plain_dict(cfg.model),
        data=plain_dict(cfg.data),
    )
    if problem is not None:  # (Lightning's own ckpt_path=last would look in this new run dir)
        raise UserError(f"{problem}; to go on with a run: resume=<run dir> or resume=last")
