"""Crafted checkpoints: whatever a checkpoint's hyper-parameters hold, nothing in them is resolved,
called or imported unless it is an allowed class. Each one must be refused in one line (exit
code 2) by every way in (load_checkpoint: eval, predict, export; the check of ``ckpt_path=``
before train.py and eval.py start) and leave no trace: the file the payload would write does not
appear."""

from __future__ import annotations

import json
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


# ----------------------------------------------------------------------------- paths in states


def _crafted_states(checkpoint: dict, paths: list[str]) -> None:
    """Every path a ModelCheckpoint's state holds set to ``paths``, which are not the run's."""
    for state in checkpoint["callbacks"].values():
        if "best_k_models" in state:
            state["best_k_models"] = {path: torch.tensor(0.0) for path in paths}
            state["best_model_path"] = state["kth_best_model_path"] = paths[0]
            state["last_model_path"] = paths[-1]


@pytest.mark.parametrize("dirpath", ["as saved", "elsewhere"])
def test_paths_in_a_checkpoints_callback_states_touch_nothing_outside_the_run(
    dirpath: str, train_cfg, tmp_path: Path
) -> None:
    """A resume checkpoint whose checkpoint callbacks name files and folders outside the run:
    Lightning would restore them and remove them as stale; each is left as it was, for every
    checkpoint callback of the default list, and the run goes on and tests its own best."""
    from mnist_lit.train import train

    quick = ("model=mlp", "scheduler=none", "callbacks.early_stopping=null")
    cfg = train_cfg(*quick, "trainer.max_epochs=1")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    victim_file, victim_dir = tmp_path / "yours.txt", tmp_path / "your-folder"
    victim_file.write_text("keep me")
    (victim_dir / "inside").mkdir(parents=True)
    # inside the run's checkpoints to Lightning's eye (it compares paths as written): outside
    escape = run / "checkpoints" / ".." / ".."
    outside = [str(escape / "yours.txt"), str(escape / "your-folder"), str(victim_file)]

    def craft(checkpoint: dict) -> None:
        _crafted_states(checkpoint, outside)
        if dirpath == "elsewhere":
            for state in checkpoint["callbacks"].values():
                if "dirpath" in state:
                    state["dirpath"] = str(tmp_path)

    crafted = edited(run / "checkpoints" / "last.ckpt", run / "checkpoints" / "crafted.ckpt", craft)
    resumed = train_cfg(*quick, "trainer.max_epochs=2", f"ckpt_path={crafted}")
    train(resumed)
    assert victim_file.read_text() == "keep me" and (victim_dir / "inside").is_dir()
    best = json.loads((run / "metrics.json").read_text())["best_ckpt"]
    assert Path(best).resolve().is_relative_to(run.resolve())


def test_paths_are_rerooted_in_this_runs_checkpoints_or_dropped(tmp_path: Path) -> None:
    """A moved or copied run dir finds its own files; nothing leads out of it."""
    from mnist_lit.callbacks.training import AtomicCheckpointIO

    run = tmp_path / "copy"
    io = AtomicCheckpointIO(str(run))
    here = run / "checkpoints" / "resume" / "step_0000003.ckpt"
    assert io.inside(f"/old/run/checkpoints/resume/{here.name}") == ""  # no such file here
    here.parent.mkdir(parents=True)
    here.write_bytes(b"")
    assert io.inside(f"/old/run/checkpoints/resume/{here.name}") == str(here.resolve())
    assert io.inside({"dirpath": "/old/run/checkpoints/x"}) == {
        "dirpath": str((run / "checkpoints" / "x").resolve())  # a folder: it need not exist
    }
    assert io.inside("/etc/passwd") == "" and io.inside("/tmp/x.ckpt") == ""
    assert io.inside("/old/checkpoints/../../etc/passwd") == ""
    (run / "checkpoints" / "b.ckpt").write_bytes(b"")
    assert io.inside({"/etc/passwd": 1, "/a/checkpoints/b.ckpt": 2}) == {
        str((run / "checkpoints" / "b.ckpt").resolve()): 2
    }
    assert io.inside("val/acc") == "val/acc" and io.inside(3) == 3  # not paths
    victim = tmp_path / "yours.ckpt"
    victim.write_text("keep me")
    io.remove_checkpoint(victim)  # Lightning's removal of a stale file: only inside the run
    io.remove_checkpoint(tmp_path)
    assert victim.read_text() == "keep me"
