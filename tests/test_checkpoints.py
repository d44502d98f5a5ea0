"""Checkpoints: weights-only loading, code a checkpoint may name, and the data set it fits.

``trained_checkpoint`` (also used by test_predict and test_export) trains a small CNN on a few
hundred real MNIST batches once per session and saves it as train.py's checkpoints are saved.
"""

from __future__ import annotations

import collections
import functools
import os
import shlex
import shutil
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_lit.checkpoints import (
    CheckpointError,
    checkpoint_problem,
    load_checkpoint,
    read_checkpoint,
    trained_on,
)
from mnist_lit.classifier import LitClassifier
from mnist_lit.data import MNISTDataModule

from .conftest import DATA_DIR, run_cli

SMALL_CNN = {
    "_target_": "mnist_lit.models.CNN",
    "channels": [16, 32],
    "hidden": 64,
    "dropout": 0.1,
    "batchnorm": True,
}
ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 0.003}


@functools.cache
def trained_checkpoint(root: Path, batches: int = 300) -> Path:
    """A small CNN fitted on ``batches`` real MNIST batches of 128, saved with its data module.

    Cached per session (pass the session's base temp dir): predict, export and these tests
    share one.
    """
    path = root / "mnist-small-cnn" / "small.ckpt"
    if path.is_file():  # another test module's copy of this function made it already
        return path
    L.seed_everything(0)
    datamodule = MNISTDataModule(data_dir=str(DATA_DIR), batch_size=128)
    model = LitClassifier(net=SMALL_CNN, optimizer=ADAM)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=batches,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=path.parent,
    )
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def mnist_ckpt(tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path) -> Path:
    return trained_checkpoint(tmp_path_factory.getbasetemp())


def edited(ckpt: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``ckpt`` with ``edit(checkpoint_dict)`` applied."""
    checkpoint = torch.load(ckpt, weights_only=True)
    edit(checkpoint)
    path = tmp_path / "edited.ckpt"
    torch.save(checkpoint, path)
    return path


class _RunsShell:
    """Pickles as ``os.system(command)``: what a hostile checkpoint holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


# ----------------------------------------------------------------------------- good checkpoints


def test_checkpoint_loads_in_eval_mode_and_knows_its_data_set(mnist_ckpt: Path) -> None:
    model = load_checkpoint(mnist_ckpt, dataset="mnist")
    assert not model.training
    assert model.hparams.net["channels"] == [16, 32]
    assert trained_on(read_checkpoint(mnist_ckpt)) == "mnist"
    reference = LitClassifier.load_from_checkpoint(mnist_ckpt, weights_only=True).eval()
    images = torch.randn(5, 1, 28, 28)
    assert torch.equal(model(images), reference(images))


def test_checkpoint_that_does_not_name_its_data_set_is_not_refused(
    mnist_ckpt: Path, tmp_path: Path
) -> None:
    """Checkpoints from before data sets were recorded load with any data config."""
    old = edited(mnist_ckpt, tmp_path, lambda c: c["datamodule_hyper_parameters"].pop("dataset"))
    assert load_checkpoint(old, dataset="fashion_mnist").hparams.num_classes == 10


# ----------------------------------------------------------------------------- bad ones


def test_other_data_set_is_one_line_with_the_fix(mnist_ckpt: Path) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(mnist_ckpt, dataset="fashion_mnist")
    assert str(info.value) == (
        f"checkpoint {mnist_ckpt} was trained on mnist, but data=fashion_mnist is selected: "
        "pass data=mnist"
    )


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": _RunsShell(f"touch {shlex.quote(str(marker))}")}, path)
    with pytest.raises(CheckpointError, match=r"it holds a Python object \(posix\.system\)"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("target", "where"),
    [
        ("os.system", "net"),
        ("mnist_lit.models.cnn.nn.Module", "net"),  # reachable by name, not a network of ours
        ("subprocess.Popen", "optimizer"),
        ("builtins.eval", "scheduler"),
    ],
)
def test_hyper_parameters_may_not_name_other_code(
    mnist_ckpt: Path, tmp_path: Path, target: str, where: str
) -> None:
    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"][where] = {"_target_": target}

    with pytest.raises(CheckpointError, match=f"its {where} names '{target}'"):
        load_checkpoint(edited(mnist_ckpt, tmp_path, edit))


def test_nested_targets_in_network_arguments_are_refused(mnist_ckpt: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    def edit(checkpoint: dict) -> None:
        checkpoint["hyper_parameters"]["net"]["hidden"] = {
            "_target_": "os.system",
            "_args_": [f"touch {marker}"],
        }

    with pytest.raises(CheckpointError, match="nested _target_"):
        load_checkpoint(edited(mnist_ckpt, tmp_path, edit))
    assert not marker.exists()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("random-bytes", "it is not a PyTorch checkpoint file"),
        ("empty", "the file is empty"),
        ("truncated", "the file is truncated or damaged"),
        ("state-dict", "it is a plain state_dict, with no 'state_dict' and 'hyper_parameters'"),
        ("other-module", "it has no 'net' hyper-parameter"),
        ("wrong-shapes", "its weights do not fit its network (size mismatch for net."),
        ("missing-weights", "its weights do not fit its network: it lacks 1 tensors"),
    ],
)
def test_files_that_are_not_litclassifier_checkpoints(
    mnist_ckpt: Path, tmp_path: Path, kind: str, expected: str
) -> None:
    data = mnist_ckpt.read_bytes()
    if kind == "random-bytes":
        path = _write(tmp_path / "x.ckpt", os.urandom(4096))
    elif kind == "empty":
        path = _write(tmp_path / "x.ckpt", b"")
    elif kind == "truncated":
        path = _write(tmp_path / "x.ckpt", data[: len(data) // 2])
    elif kind == "state-dict":
        path = tmp_path / "x.ckpt"
        torch.save(load_checkpoint(mnist_ckpt).net.state_dict(), path)
    elif kind == "other-module":
        path = edited(mnist_ckpt, tmp_path, lambda c: c.update(hyper_parameters={"lr": 0.1}))
    elif kind == "wrong-shapes":
        path = edited(
            mnist_ckpt, tmp_path, lambda c: c["hyper_parameters"]["net"].update(channels=[8, 8])
        )
    else:
        # a weight of the network (the state dict also holds the metrics' saved states)
        path = edited(
            mnist_ckpt,
            tmp_path,
            lambda c: c["state_dict"].pop(next(k for k in c["state_dict"] if k.startswith("net."))),
        )
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, dataset="mnist")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"checkpoint {path} is not a LitClassifier checkpoint: ")
    assert expected in message


def test_a_plain_ordered_state_dict_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(collections.OrderedDict(weight=torch.zeros(2)), path)
    with pytest.raises(CheckpointError, match="it is a plain state_dict"):
        read_checkpoint(path)


# ----------------------------------------------------------------------------- the commands


@pytest.mark.parametrize("script", ["predict.py", "eval.py", "export.py"])
def test_commands_refuse_bad_checkpoints_with_one_line(
    script: str, mnist_ckpt: Path, tmp_path: Path
) -> None:
    """Random bytes: exit code 2 and one ``error:`` line, from each command that loads one."""
    bad = _write(tmp_path / "bad.ckpt", os.urandom(2048))
    args = [f"ckpt_path={bad}", f"paths.log_dir={tmp_path / 'logs'}"]
    if script == "predict.py":
        args.append(f"images={tmp_path}")
    result = run_cli(script, *args, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: checkpoint {bad} is not a LitClassifier checkpoint: "
        "it is not a PyTorch checkpoint file (torch.load cannot read it); "
        "pass one that train.py saved (<run dir>/checkpoints/*.ckpt)"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_eval_refuses_a_checkpoint_of_another_data_set(mnist_ckpt: Path, tmp_path: Path) -> None:
    result = run_cli(
        "eval.py",
        f"ckpt_path={mnist_ckpt}",
        "data=fashion_mnist",
        f"paths.log_dir={tmp_path}",
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: checkpoint {mnist_ckpt} was trained on mnist, but data=fashion_mnist is "
        "selected: pass data=mnist"
    )


# ----------------------------------------------------------------------------- checkpoint_problem


def test_checkpoint_problem_is_none_for_a_usable_checkpoint(mnist_ckpt: Path) -> None:
    assert checkpoint_problem(mnist_ckpt) is None
    assert checkpoint_problem(mnist_ckpt, dataset="mnist", resume=True, net=SMALL_CNN) is None
    # another dropout rate changes no weight: training can go on with it
    assert checkpoint_problem(mnist_ckpt, resume=True, net={**SMALL_CNN, "dropout": 0.5}) is None


def test_checkpoint_problem_is_quick_and_changes_nothing(mnist_ckpt: Path, tmp_path: Path) -> None:
    """Resuming tries checkpoints newest first with it: it must be cheap and only read."""
    path = tmp_path / "checkpoints" / "last.ckpt"
    path.parent.mkdir()
    shutil.copyfile(mnist_ckpt, path)
    before = path.read_bytes(), path.stat().st_mtime_ns, sorted(tmp_path.rglob("*"))
    started = time.perf_counter()
    for _ in range(5):
        assert checkpoint_problem(path, dataset="mnist", resume=True, net=SMALL_CNN) is None
    assert (time.perf_counter() - started) / 5 < 1.0
    assert (path.read_bytes(), path.stat().st_mtime_ns, sorted(tmp_path.rglob("*"))) == before


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("missing", "does not exist: pass ckpt_path=<run dir>/checkpoints/<file>.ckpt"),
        ("folder", "is a folder, not a file: pass ckpt_path={run}/checkpoints/last.ckpt"),
        ("text", "is not a LitClassifier checkpoint: it is not a PyTorch checkpoint file"),
        ("truncated", "is not a LitClassifier checkpoint: the file is truncated or damaged"),
        ("weights-only", "holds the weights only (no optimizer state), so training cannot resume"),
        ("fashion", "was trained on mnist, but data=fashion_mnist is selected: pass data=mnist"),
        ("mlp", "holds a mnist_lit.models.CNN(channels=[16,32], hidden=64, dropout=0.1, "),
        ("sizes", "with other layers than the model config's: pass model.channels=[16,32] "),
    ],
)
def test_checkpoint_problem_names_the_file_and_the_fix(
    mnist_ckpt: Path, tmp_path: Path, kind: str, expected: str
) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    good = run / "checkpoints" / "last.ckpt"
    shutil.copyfile(mnist_ckpt, good)
    path, options = good, {}
    if kind == "missing":
        path = run / "checkpoints" / "epoch_099.ckpt"
    elif kind == "folder":
        path = run
    elif kind == "text":
        path = _write(tmp_path / "notes.ckpt", b"val/acc 0.99\n")
    elif kind == "truncated":
        path = _write(tmp_path / "cut.ckpt", good.read_bytes()[: good.stat().st_size // 2])
    elif kind == "weights-only":
        path = edited(good, tmp_path, lambda c: c.pop("optimizer_states"))
        options = {"resume": True}
    elif kind == "fashion":
        options = {"dataset": "fashion_mnist"}
    elif kind == "mlp":
        options = {"net": {"_target_": "mnist_lit.models.MLP", "hidden_sizes": [64]}}
    else:
        options = {"net": {**SMALL_CNN, "channels": [32, 64], "hidden": 128}}
    problem = checkpoint_problem(path, **options)
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"checkpoint {path} ")
    assert expected.format(run=run) in problem
