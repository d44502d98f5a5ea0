"""Checkpoints: weights-only loading, the code a checkpoint may name, the data set and network it
fits, and the atomic writer. Checkpoints are ``tiny_ckpts`` (fitted on synthetic data) and files
crafted from them with ``torch.save``."""

from __future__ import annotations

import collections
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from mnist_lit.callbacks.training import AtomicCheckpointIO
from mnist_lit.checkpoints import (
    ALLOWED_TARGETS,
    allowed_class,
    checkpoint_problem,
    load_checkpoint,
    read_checkpoint,
    trained_on,
)
from mnist_lit.classifier import LitClassifier
from mnist_lit.errors import UserError
from mnist_lit.train import checkpoint_step

from .conftest import TINY_CNN, edited


@pytest.fixture
def ckpt(tiny_ckpts: dict) -> Path:
    """The tiny CNN, trained on (and saying) the synthetic data set."""
    return tiny_ckpts["synthetic"]


def _edit(ckpt: Path, tmp_path: Path, edit) -> Path:
    return edited(ckpt, tmp_path / "edited.ckpt", edit)


def _refused(path: Path, **kwargs) -> str:
    """The one line ``load_checkpoint`` refuses ``path`` with (a ``UserError``, exit code 2)."""
    with pytest.raises(UserError) as caught:
        load_checkpoint(path, **kwargs)
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


class _RunsShell:
    """Pickles as ``os.system(command)``: what a hostile checkpoint holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# ----------------------------------------------------------------------------- good checkpoints


def test_checkpoint_loads_in_eval_mode_and_knows_its_data_set(ckpt: Path) -> None:
    model = load_checkpoint(ckpt, dataset="synthetic")
    assert not model.training
    assert model.hparams.net["channels"] == TINY_CNN["channels"]
    assert trained_on(read_checkpoint(ckpt)) == "synthetic"
    reference = LitClassifier.load_from_checkpoint(ckpt, weights_only=True).eval()
    images = torch.randn(5, 1, 28, 28)
    assert torch.equal(model(images), reference(images))


def test_checkpoint_that_does_not_name_its_data_set_is_not_refused(
    ckpt: Path, tmp_path: Path
) -> None:
    """Checkpoints from before data sets were recorded load with any data config."""
    old = _edit(ckpt, tmp_path, lambda c: c["datamodule_hyper_parameters"].pop("dataset"))
    assert trained_on(read_checkpoint(old)) is None
    assert load_checkpoint(old, dataset="fashion_mnist").hparams.num_classes == 10


def test_the_step_it_was_saved_at(ckpt: Path) -> None:
    assert checkpoint_step(ckpt) == 3  # fitted on 3 batches


# ----------------------------------------------------------------------------- bad ones


def test_other_data_set_names_both_and_the_fix(ckpt: Path) -> None:
    message = _refused(ckpt, dataset="fashion_mnist")
    assert "fashion_mnist" in message and "data=synthetic" in message


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _RunsShell(f"touch {shlex.quote(str(marker))}")}, path)
    assert "posix.system" in _refused(path)
    assert not marker.exists()


def test_the_allow_list_holds_classes_by_their_exact_name() -> None:
    assert set(ALLOWED_TARGETS) == {"optimizer", "scheduler"}
    from mnist_lit.models.cnn import CNN

    assert allowed_class("net", "mnist_lit.models.cnn.CNN") is CNN
    # only the networks of the project's own models package, by their exact module
    for other in ("mnist_lit.models.CNN", "torch.nn.Linear", "os.system", "mnist_lit.train.train"):
        assert allowed_class("net", other) is None
    assert allowed_class("net", "mnist_lit.models.cnn.Tensor") is None  # not an nn.Module
    assert {"torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"} <= set(
        ALLOWED_TARGETS["optimizer"]
    )
    assert {
        "torch.optim.lr_scheduler.OneCycleLR",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        "torch.optim.lr_scheduler.StepLR",
    } <= set(ALLOWED_TARGETS["scheduler"])
    assert ALLOWED_TARGETS["optimizer"]["torch.optim.Adam"] is torch.optim.Adam
    assert all(
        isinstance(cls, type) for group in ALLOWED_TARGETS.values() for cls in group.values()
    )


@pytest.mark.parametrize(
    ("target", "where"),
    [
        ("os.system", "net"),
        ("mnist_lit.models.cnn.nn.Module", "net"),  # reachable by name, not a network of ours
        ("mnist_lit.models.CNN", "net"),  # ours, but not by the name the allow-list has
        ("subprocess.Popen", "optimizer"),
        ("torch.optim.adam.Adam", "optimizer"),
        ("builtins.eval", "scheduler"),
        (None, "optimizer"),
    ],
)
def test_hyper_parameters_may_not_name_other_code(
    ckpt: Path, tmp_path: Path, target: str | None, where: str
) -> None:
    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"][where] = {"_target_": target}

    message = _refused(_edit(ckpt, tmp_path, edit))
    assert where in message and repr(target) in message


def test_nothing_a_checkpoint_names_is_imported(ckpt: Path, tmp_path: Path) -> None:
    module = "this"  # the Zen of Python: prints itself when imported
    assert module not in sys.modules

    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"]["net"]["_target_"] = f"{module}.s"

    assert "net" in _refused(_edit(ckpt, tmp_path, edit))
    assert module not in sys.modules


def test_nested_targets_in_network_arguments_are_refused(ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"]["net"]["hidden"] = {
            "_target_": "os.system",
            "_args_": [f"touch {marker}"],
        }

    assert "_target_" in _refused(_edit(ckpt, tmp_path, edit))
    assert not marker.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        ("random-bytes", "not a PyTorch checkpoint"),
        ("empty", "empty"),
        ("truncated", "truncated"),
        ("state-dict", "state_dict"),
        ("other-module", "'net'"),
        ("wrong-shapes", "net."),
        ("missing-weights", "lacks 1"),
        ("unexpected-weights", "unexpected"),
        ("not-a-dict", "list"),
    ],
)
def test_files_that_are_not_litclassifier_checkpoints(
    ckpt: Path, tmp_path: Path, kind: str, cause: str
) -> None:
    data = ckpt.read_bytes()
    path = tmp_path / "x.ckpt"
    if kind == "random-bytes":
        _write(path, os.urandom(4096))
    elif kind == "empty":
        _write(path, b"")
    elif kind == "truncated":  # the end of the file, where the zip's directory is, is gone
        _write(path, data[: len(data) * 9 // 10])
    elif kind == "state-dict":
        torch.save(load_checkpoint(ckpt).net.state_dict(), path)
    elif kind == "not-a-dict":
        torch.save([1, 2, 3], path)
    elif kind == "other-module":
        path = _edit(ckpt, tmp_path, lambda c: c.update(hyper_parameters={"lr": 0.1}))
    elif kind == "wrong-shapes":
        path = _edit(ckpt, tmp_path, lambda c: c["hyper_parameters"]["net"].update(hidden=8))
    elif kind == "unexpected-weights":
        path = _edit(ckpt, tmp_path, lambda c: c["state_dict"].update({"net.extra": torch.ones(1)}))
    else:
        # a weight of the network (the state dict also holds the metrics' saved states)
        path = _edit(
            ckpt,
            tmp_path,
            lambda c: c["state_dict"].pop(next(k for k in c["state_dict"] if k.startswith("net."))),
        )
    message = _refused(path, dataset="synthetic")
    assert cause in message


def test_a_checkpoint_cut_in_half_is_called_truncated(ckpt: Path, tmp_path: Path) -> None:
    data = ckpt.read_bytes()
    assert "truncated" in _refused(_write(tmp_path / "half.ckpt", data[: len(data) // 2]))


def test_a_plain_ordered_state_dict_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(collections.OrderedDict(weight=torch.zeros(2)), path)
    with pytest.raises(UserError, match="state_dict"):
        read_checkpoint(path)


# ----------------------------------------------------------------------------- checkpoint_problem


def test_checkpoint_problem_is_none_for_a_usable_checkpoint(ckpt: Path) -> None:
    assert checkpoint_problem(ckpt) is None
    assert checkpoint_problem(ckpt, dataset="synthetic", resume=True, net=TINY_CNN) is None
    # another dropout rate changes no weight: training can go on with it
    assert checkpoint_problem(ckpt, resume=True, net={**TINY_CNN, "dropout": 0.5}) is None


def test_checkpoint_problem_changes_nothing(ckpt: Path, tmp_path: Path) -> None:
    """Resuming tries checkpoints newest first with it: it must only read. (How long it takes is
    not asserted: a timer in a test fails on a busy machine.)"""
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    shutil.copyfile(ckpt, path)
    before = path.read_bytes(), path.stat().st_mtime_ns, sorted(tmp_path.rglob("*"))
    for _ in range(2):
        assert checkpoint_problem(path, dataset="synthetic", resume=True, net=TINY_CNN) is None
    assert (path.read_bytes(), path.stat().st_mtime_ns, sorted(tmp_path.rglob("*"))) == before


@pytest.mark.parametrize(
    ("kind", "cause"),
    [
        ("missing", "does not exist"),
        ("folder", "{run}/checkpoints/last.ckpt"),
        ("text", "not a PyTorch checkpoint"),
        ("truncated", "truncated"),
        ("weights-only", "weights only"),
        ("fashion", "data=synthetic"),
        ("mlp", "mnist_lit.models.cnn.CNN"),
        ("sizes", "model.channels=[4,8]"),
    ],
)
def test_checkpoint_problem_names_the_file_and_the_cause(
    ckpt: Path, tmp_path: Path, kind: str, cause: str
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    good = run / "checkpoints" / "last.ckpt"
    shutil.copyfile(ckpt, good)
    path, options = good, {}
    if kind == "missing":
        path = run / "checkpoints" / "epoch_099.ckpt"
    elif kind == "folder":
        path = run
    elif kind == "text":
        path = _write(tmp_path / "notes.ckpt", b"val/acc 0.99\n")
    elif kind == "truncated":
        path = _write(tmp_path / "cut.ckpt", good.read_bytes()[: good.stat().st_size * 9 // 10])
    elif kind == "weights-only":
        path = _edit(good, tmp_path, lambda c: c.pop("optimizer_states"))
        options = {"resume": True}
    elif kind == "fashion":
        options = {"dataset": "fashion_mnist"}
    elif kind == "mlp":
        options = {"net": {"_target_": "mnist_lit.models.mlp.MLP", "hidden_sizes": [64]}}
    else:
        options = {"net": {**TINY_CNN, "channels": [32, 64], "hidden": 128}}
    problem = checkpoint_problem(path, **options)
    assert problem is not None and "\n" not in problem
    assert str(path) in problem
    assert cause.format(run=run) in problem


# ----------------------------------------------------------------------------- the writer


def test_atomic_checkpoint_io_writes_a_whole_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "step.ckpt"
    AtomicCheckpointIO(str(tmp_path)).save_checkpoint({"global_step": 7, "w": torch.ones(3)}, path)
    assert checkpoint_step(path) == 7
    assert [p.name for p in path.parent.iterdir()] == ["step.ckpt"]


def test_atomic_checkpoint_io_keeps_the_old_file_when_a_save_fails(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO(str(tmp_path)).save_checkpoint({"global_step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 (whatever pickle raises for a lambda)
        AtomicCheckpointIO(str(tmp_path)).save_checkpoint({"global_step": 2, "f": lambda: 0}, path)
    assert checkpoint_step(path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    with pytest.raises(TypeError):
        AtomicCheckpointIO(str(tmp_path)).save_checkpoint({}, path, storage_options={"x": 1})


def test_the_checkpoints_normalization_replaces_the_configs(
    tiny_ckpts: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """eval, predict and export normalize as the network was trained, whatever data.mean says."""

    def edit(checkpoint: dict) -> None:
        checkpoint["datamodule_hyper_parameters"].update(mean=0.5, std=0.25)

    path = edited(tiny_ckpts["full"], tmp_path / "other-stats.ckpt", edit)
    data_cfg = OmegaConf.create({"_target_": "mnist_lit.data.MNISTDataModule", "mean": 0.1307})
    data_cfg.std = 0.3081
    load_checkpoint(path, data_cfg=data_cfg)
    assert (data_cfg.mean, data_cfg.std) == (0.5, 0.25)
    assert "checkpoint's mean=0.5 std=0.25" in capsys.readouterr().out


def test_a_checkpoint_without_statistics_keeps_the_configs(
    tiny_ckpts: dict, tmp_path: Path
) -> None:
    def edit(checkpoint: dict) -> None:
        del checkpoint["datamodule_hyper_parameters"]

    path = edited(tiny_ckpts["full"], tmp_path / "no-stats.ckpt", edit)
    data_cfg = OmegaConf.create({"_target_": "mnist_lit.data.MNISTDataModule", "mean": 0.1})
    data_cfg.std = 0.2
    load_checkpoint(path, data_cfg=data_cfg)
    assert (data_cfg.mean, data_cfg.std) == (0.1, 0.2)


@pytest.mark.parametrize(
    "stats",
    [{"std": 0.0}, {"std": -0.3}, {"std": float("inf")}, {"mean": float("nan")}, {"std": "x"}],
    ids=["std 0", "std < 0", "std inf", "mean nan", "std text"],
)
def test_statistics_that_cannot_normalize_are_refused(
    stats: dict, tiny_ckpts: dict, tmp_path: Path
) -> None:
    """A std of 0 or a value that is not a finite number would give nan probabilities: refused
    wherever the checkpoint is read (eval and predict, and the check before training)."""
    path = edited(
        tiny_ckpts["full"],
        tmp_path / "bad-stats.ckpt",
        lambda c: c["datamodule_hyper_parameters"].update(stats),
    )
    data_cfg = OmegaConf.create({"_target_": "mnist_lit.data.MNISTDataModule", "mean": 0.1307})
    data_cfg.std = 0.3081
    assert "std" in _refused(path, data_cfg=data_cfg)
    assert checkpoint_problem(path) is not None


def test_training_on_from_a_checkpoint_needs_its_statistics(tiny_ckpts: dict) -> None:
    """train.py ckpt_path=... with another mean or std than the checkpoint's would feed the
    network inputs it never learned: refused, naming the values to pass."""
    path = tiny_ckpts["full"]
    trained = torch.load(path, weights_only=True)["datamodule_hyper_parameters"]
    same = {"mean": trained["mean"], "std": trained["std"]}
    assert checkpoint_problem(path, data=same) is None
    problem = checkpoint_problem(path, data={**same, "std": 0.5})
    assert problem is not None and f"data.std={trained['std']}" in problem
    assert "data.mean" in problem  # the whole fix: both values to pass
