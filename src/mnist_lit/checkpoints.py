"""Load a ``LitClassifier`` checkpoint safely, and check it fits the selected data set.

A checkpoint is a pickle, and a pickle can run code: it is read with ``torch.load(...,
weights_only=True)``, which only rebuilds tensors and plain data. Its hyper-parameters also name
code (``_target_``) that building the model imports and calls, so only networks from
``mnist_lit.models``, optimizers from ``torch.optim`` and schedules from
``torch.optim.lr_scheduler`` are built. Every failure is a ``CheckpointError`` with one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from hydra._internal.utils import _locate
from hydra.utils import get_class
from omegaconf import DictConfig
from torch import nn

from mnist_lit.classifier import LitClassifier
from mnist_lit.console import first_line
from mnist_lit.data.sources import DatasetSpec

#: what each hyper-parameter of ``LitClassifier`` may name as its ``_target_``: a module prefix
#: (checked before anything is imported) and the base class the target must derive from
ALLOWED_TARGETS: dict[str, tuple[str, tuple[type, ...]]] = {
    "net": ("mnist_lit.models.", (nn.Module,)),
    "optimizer": ("torch.optim.", (torch.optim.Optimizer,)),
    "scheduler": (
        "torch.optim.lr_scheduler.",
        (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau),
    ),
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here; the message is one line with the fix."""


def spec_of_config(data_cfg: DictConfig) -> DatasetSpec | None:
    """The ``DatasetSpec`` of the data module a data config builds (``None`` if it has none)."""
    spec = getattr(get_class(data_cfg._target_), "spec", None)
    return spec if isinstance(spec, DatasetSpec) else None


def dataset_of_config(data_cfg: DictConfig) -> str | None:
    """The data set a data config selects (``mnist``, ``fashion_mnist``), when it says."""
    spec = spec_of_config(data_cfg)
    return spec.name if spec is not None else None


def read_checkpoint(ckpt_path: str | Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded weights-only; a ``CheckpointError`` for a bad file."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist: pass ckpt_path=<run dir>/checkpoints/<file>.ckpt"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # random bytes, a truncated file, objects weights_only refuses
        raise CheckpointError(
            f"checkpoint {path} is not a LitClassifier checkpoint: {_unreadable(path, err)}"
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        what = "a plain state_dict" if _is_state_dict(checkpoint) else type(checkpoint).__name__
        raise CheckpointError(
            f"checkpoint {path} is not a LitClassifier checkpoint: it is {what}, with no "
            f"'state_dict' and 'hyper_parameters' (save one with Trainer.save_checkpoint)"
        )
    return checkpoint


def trained_on(checkpoint: dict[str, Any]) -> str | None:
    """The data set a checkpoint was trained on, or ``None`` when it does not say."""
    hparams = checkpoint.get("datamodule_hyper_parameters") or {}
    dataset = hparams.get("dataset") if isinstance(hparams, dict) else None
    return dataset if isinstance(dataset, str) else None


def check_dataset(checkpoint: dict[str, Any], selected: str) -> None:
    """One line when the checkpoint was trained on another data set than ``data=<selected>``.

    A checkpoint that does not say (from before data sets were recorded, or fitted without a
    data module) passes: it cannot be checked.
    """
    dataset = trained_on(checkpoint)
    if dataset is not None and dataset != selected:
        raise CheckpointError(
            f"checkpoint was trained on {dataset}, but data={selected} is selected: "
            f"pass data={dataset}"
        )


def build_model(checkpoint: dict[str, Any], ckpt_path: str | Path = "checkpoint") -> LitClassifier:
    """A ``LitClassifier`` in eval mode from a checkpoint read by ``read_checkpoint``."""
    prefix = f"checkpoint {ckpt_path} is not a LitClassifier checkpoint"
    hparams = checkpoint.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("net"), dict):
        raise CheckpointError(
            f"{prefix}: it has no 'net' hyper-parameter (a checkpoint of another LightningModule?)"
        )
    for key in ALLOWED_TARGETS:
        config = hparams.get(key)
        if config is not None or key != "scheduler":
            _check_target(key, config, prefix)
    names = ("net", "optimizer", "scheduler", "num_classes")
    try:
        model = LitClassifier(**{k: hparams[k] for k in names if k in hparams})
    except Exception as err:  # arguments the network does not take
        reason = first_line(err, skip="Error in call to target")
        raise CheckpointError(f"{prefix}: cannot build its network ({reason})") from None
    try:
        result = model.load_state_dict(checkpoint["state_dict"], strict=False)
    except Exception as err:  # weights of another shape, or not tensors
        reason = first_line(err, skip="Error(s) in loading state_dict")
        raise CheckpointError(f"{prefix}: its weights do not fit its network ({reason})") from None
    if result.missing_keys or result.unexpected_keys:
        keys = result.missing_keys or result.unexpected_keys
        what = "lacks" if result.missing_keys else "has unexpected"
        raise CheckpointError(
            f"{prefix}: its weights do not fit its network: it {what} {len(keys)} tensors "
            f"({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
        )
    return model.eval()


def load_checkpoint(ckpt_path: str | Path, dataset: str | None = None) -> LitClassifier:
    """Load a LitClassifier in eval mode; with ``dataset``, refuse one trained on another set.

    Raises:
        CheckpointError: missing or unreadable file, not a LitClassifier checkpoint, code it
            may not run, or another data set. The message is one line.
    """
    checkpoint = read_checkpoint(ckpt_path)
    if dataset is not None:
        check_dataset(checkpoint, dataset)
    return build_model(checkpoint, ckpt_path)


def _check_target(key: str, config: object, prefix: str) -> None:
    """Refuse a hyper-parameter whose ``_target_`` is not an allowed class (building calls it)."""
    module_prefix, bases = ALLOWED_TARGETS[key]
    target = config.get("_target_") if isinstance(config, dict) else None
    allowed = isinstance(target, str) and target.startswith(module_prefix)
    if allowed:
        try:
            cls = _locate(target)  # imports modules under the allowed prefix only
        except Exception:
            cls = None
        allowed = isinstance(cls, type) and issubclass(cls, bases)
        allowed = allowed and f"{cls.__module__}.".startswith(module_prefix)
    if not allowed:
        raise CheckpointError(
            f"{prefix}: its {key} names {target!r}, not a class of {module_prefix}* "
            f"(refusing to run code a checkpoint names)"
        )
    # hydra's instantiate would call a ``_target_`` nested in the arguments too
    if any(_names_code(v) for k, v in config.items() if k != "_target_"):
        raise CheckpointError(
            f"{prefix}: its {key} arguments name code to call (a nested _target_), refusing it"
        )


def _names_code(value: object) -> bool:
    if isinstance(value, dict):
        return "_target_" in value or any(_names_code(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_names_code(v) for v in value)
    return False


def _unreadable(path: Path, err: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` failed, in a few words."""
    text = str(err)
    # "Unsupported global: GLOBAL a.B was not..." or "unsupported GLOBAL posix.system whose..."
    refused = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", text, re.IGNORECASE)
    if refused:
        return f"it holds a Python object ({refused[1]}), which a weights-only load refuses"
    if path.stat().st_size == 0:
        return "the file is empty"
    if "zip archive" in text:  # torch's format is a zip file: this one is cut short or damaged
        return f"the file is truncated or damaged ({first_line(err).split('. ')[0]})"
    return "it is not a PyTorch checkpoint file (torch.load cannot read it)"


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())
