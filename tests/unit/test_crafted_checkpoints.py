"""Crafted checkpoints: whatever a checkpoint's hyper-parameters hold, nothing in them is resolved,
called or imported unless it is an allowed class. Each one must be refused in one line (exit
code 2) by every way in (load_checkpoint: eval, predict, export; the check of ``ckpt_path=``
before train.py and eval.py start) and leave no trace: the file the payload would write does not
appear."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mnist_lit.checkpoints import checkpoint_problem, load_checkpoint
from mnist_lit.errors import UserError

from .conftest import edited, precheck

#: what a payload writes if it runs: ``{marker}`` is filled in per test
OPEN = "${oc.create:{_target_:builtins.open,file:'{marker}',mode:w}}"


def _net(key: str, value: Any) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["hyper_parameters"]["net"].__setitem__(key, value)


def _hparams(key: str, value: Any) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["hyper_parameters"].__setitem__(key, value)


def _optimizer(key: str, value: Any) -> Callable[[dict], None]:
    return lambda ckpt: ckpt["hyper_parameters"]["optimizer"].__setitem__(key, value)


#: (id, edit of the checkpoint dict, with ``{marker}`` in strings replaced by the marker path)
CRAFTED = [
    ("oc.create builds a node naming code", _net("hidden", OPEN)),
    ("oc.create in the optimizer", _optimizer("lr", OPEN)),
    ("oc.create as _partial_", _optimizer("_partial_", OPEN)),
    ("oc.create in num_classes", _hparams("num_classes", OPEN)),
    ("oc.create in a list", _net("channels", [4, OPEN])),
    ("oc.create as a key", _net(OPEN, 1)),
    ("oc.env resolver", _net("hidden", "${oc.env:HOME}")),
    ("oc.decode resolver", _optimizer("lr", "${oc.decode:'1e-3'}")),
    ("an unregistered resolver", _net("hidden", "${python:open('{marker}','w')}")),
    ("an interpolation of another key", _net("hidden", "${..optimizer.lr}")),
    ("nested _target_", _net("hidden", {"_target_": "builtins.open", "file": "{marker}"})),
    ("nested _target_ in a list", _net("channels", [{"_target_": "builtins.open"}])),
    ("_args_ beside an allowed class", _net("_args_", [OPEN])),
    ("_recursive_ directive", _net("_recursive_", True)),
    ("_convert_ directive", _optimizer("_convert_", "all")),
    ("a tensor as an argument", _net("hidden", torch.tensor([1.0]))),
    ("a bytes argument", _net("hidden", b"x")),
    ("callable target", _net("_target_", "builtins.open")),
    ("a target that is not a string", _net("_target_", ["mnist_lit.models.cnn.CNN"])),
    ("scheduler naming code", _hparams("scheduler", {"_target_": "os.system", "_args_": ["x"]})),
    ("scheduler interpolation", _hparams("scheduler", {"_target_": "x", "gamma": OPEN})),
]


def _with_marker(value: Any, marker: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{marker}", str(marker))
    if isinstance(value, dict):
        return {_with_marker(k, marker): _with_marker(v, marker) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_marker(v, marker) for v in value]
    return value


@pytest.fixture(params=CRAFTED, ids=[case[0] for case in CRAFTED])
def crafted(request, tiny_ckpts: dict, tmp_path: Path) -> tuple[Path, Path]:
    """A checkpoint crafted from the tiny model, and the file its payload would create."""
    _, edit = request.param
    marker = tmp_path / "pwned"

    def apply(checkpoint: dict) -> None:
        edit(checkpoint)
        checkpoint["hyper_parameters"] = _with_marker(checkpoint["hyper_parameters"], marker)

    return edited(tiny_ckpts["full"], tmp_path / "crafted.ckpt", apply), marker


def test_loading_refuses_it_in_one_line(crafted: tuple[Path, Path]) -> None:
    path, marker = crafted
    with pytest.raises(UserError) as caught:
        load_checkpoint(path)
    assert caught.value.exit_code == 2
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    assert not marker.exists()


def test_the_check_before_any_work_refuses_it(crafted: tuple[Path, Path]) -> None:
    path, marker = crafted
    assert checkpoint_problem(path, resume=True) is not None
    with pytest.raises(UserError) as caught:  # eval's is the same check, without resume
        precheck("train", [f"ckpt_path={path}"])
    assert caught.value.exit_code == 2
    assert not marker.exists()


def test_the_untouched_checkpoint_loads(tiny_ckpts: dict) -> None:
    """The check refuses only what a crafted file adds: train.py's own checkpoints pass."""
    assert checkpoint_problem(tiny_ckpts["full"], resume=True) is None
