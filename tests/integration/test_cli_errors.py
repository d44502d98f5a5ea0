"""Bad command lines through the real command line: exit code 2, one ``error:`` line naming the key
or the checkpoint, no traceback and, when the checks before the work refuse it, no run dir left.

The whole table runs in-process in ``tests/unit/test_command_line.py`` (and the values a class
refuses when built in ``tests/unit/test_build_errors.py``); here: every bad checkpoint and one
case of each kind, each a real ``python <script>.py`` (each spends seconds importing torch).
"""

# the tables below hold one case a line
# ruff: noqa: E501

from __future__ import annotations

import contextlib
import functools
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_lit.classifier import LitClassifier
from mnist_lit.data import MNISTDataModule
from mnist_lit.errors import FAILED

from ..conftest import DATA_DIR, error_line, run_cli

#: the network of the checkpoints made here: not the default sizes of conf/model/cnn.yaml
TINY_CNN = {
    "_target_": "mnist_lit.models.cnn.CNN",
    "channels": [8, 16],
    "hidden": 32,
    "dropout": 0.1,
}
FITS_TINY = ["model.channels=[8,16]", "model.hidden=32", "model.dropout=0.1"]


@functools.cache
def tiny_checkpoints(root: Path) -> dict[str, Path]:
    """Checkpoints of a small CNN fitted on 2 real MNIST batches, and bad files made from them."""
    folder = root / "tiny-cnn"
    paths = {
        "full": folder / "run" / "checkpoints" / "last.ckpt",
        "weights": folder / "weights-only.ckpt",
        "truncated": folder / "truncated.ckpt",
        "text": folder / "notes.ckpt",
        "state_dict": folder / "net.pt",
    }
    L.seed_everything(0)
    model = LitClassifier(
        net=TINY_CNN, optimizer={"_target_": "torch.optim.Adam", "_partial_": True}
    )
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=folder,
    )
    trainer.fit(model, datamodule=MNISTDataModule(data_dir=str(DATA_DIR), batch_size=64))
    trainer.save_checkpoint(paths["full"])
    trainer.save_checkpoint(paths["weights"], weights_only=True)
    data = paths["full"].read_bytes()
    paths["truncated"].write_bytes(data[: len(data) * 9 // 10])  # its zip directory cut off
    paths["text"].write_text("epoch 7: val/acc 0.99\n")
    torch.save(model.net.state_dict(), paths["state_dict"])
    return paths


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path) -> dict[str, Path]:
    return tiny_checkpoints(tmp_path_factory.getbasetemp())


def case(script: str, args: str, *expected: str, built: bool = False) -> pytest.param:
    """A command line (``{full}`` etc. name the checkpoints) and what its one line must name.

    ``built``: refused by the class the value is for, when train.py builds it inside Hydra (a
    run dir is made by then), not by the check before Hydra.
    """
    return pytest.param(script, args, expected, built, id=f"{script[:-3]} {args}")


# fmt: off
CLI_CASES = [
    # every bad checkpoint
    case("train.py", "ckpt_path={missing}", "{missing}", "does not exist"),
    case("eval.py", "ckpt_path={missing}", "{missing}", "does not exist"),
    case("eval.py", "ckpt_path={folder}", "{folder}", "ckpt_path={full}"),
    case("predict.py", "ckpt_path={text} images=x", "{text}", "not a PyTorch checkpoint"),
    case("export.py", "ckpt_path={truncated}", "{truncated}", "truncated"),
    case("eval.py", "ckpt_path={state_dict}", "{state_dict}", "state_dict"),
    case("eval.py", "ckpt_path={full} data=fashion_mnist", "{full}", "data=mnist"),
    case("train.py", "ckpt_path={full} model=mlp", "{full}", "mnist_lit.models.cnn.CNN", "mnist_lit.models.mlp.MLP"),
    case("train.py", "ckpt_path={full}", "{full}", "model.channels=[8,16]"),
    case("train.py", "ckpt_path={full} data.std=0.5", "{full}", "data.std=0.3081"),
    case("train.py", "ckpt_path={weights} " + " ".join(FITS_TINY), "{weights}", "weights only"),
    case("train.py", "ckpt_path={full} data=fashion_mnist " + " ".join(FITS_TINY), "{full}", "data=mnist"),
    # one override of each kind
    case("train.py", "model.dropuot=0.5", "model.dropuot", "model.dropout"),
    case("train.py", "+model.foo=1", "model.foo"),
    case("train.py", "model=cnnn", "cnnn"),
    case("train.py", "optimizer.lr=-1", "optimizer.lr"),
    case("train.py", "model.dropout=[1]", "model.dropout"),
    case("train.py", "model.dropout=1.5", "model.dropout"),
    case("train.py", "data.batch_size=abc", "data.batch_size"),
    case("train.py", "trainer.max_epochs=1.5", "trainer.max_epochs"),
    case("train.py", "-m model=mlp,cnn model.dropout=0.2,2", "model.dropout=2"),
    case("train.py", "model.dropout=[", "model.dropout=["),
    case("eval.py", "", "ckpt_path"),
    case("predict.py", "ckpt_path={full} images=x output=out.txt", "output"),
    case("export.py", "ckpt_path={full} format=tflite", "format"),
    # values the class they are for refuses when train.py builds it
    case("train.py", "trainer.devices=0", "trainer", "devices=0", built=True),
    case("train.py", "trainer.precision=15", "trainer", "15", built=True),
    case("train.py", "data=fashion_mnist data.val_size=70000", "data", "val_size", built=True),
]
# fmt: on


def _fill(text: str, names: dict[str, str]) -> str:
    """``text`` with ``{full}`` etc. replaced by the paths (other braces are Hydra's)."""
    for name, value in names.items():
        text = text.replace(f"{{{name}}}", value)
    return text


def _names(ckpts: dict[str, Path]) -> dict[str, str]:
    """What ``{name}`` stands for in a case: the checkpoints and a few bad paths."""
    folder = ckpts["full"].parent.parent  # a run dir: its checkpoints/ holds last.ckpt
    names = {name: str(path) for name, path in ckpts.items()}
    return {**names, "folder": str(folder), "missing": str(folder / "nope.ckpt")}


@pytest.fixture(scope="module")
def cli_results(ckpts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every CLI case run once, three at a time (each spends its seconds importing), by id:
    its result and the log dir it was given (where a run dir would appear)."""
    logs = tmp_path_factory.mktemp("cli-logs")
    names = _names(ckpts)

    def run(numbered: tuple[int, pytest.param]) -> tuple:
        number, param = numbered
        script, args, _, _ = param.values
        log_dir = logs / str(number)
        command = [*_fill(args, names).split(), f"paths.log_dir={log_dir}"]
        return param.id, (run_cli(script, *command, timeout=300), log_dir)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, enumerate(CLI_CASES)))


@pytest.mark.slow
@pytest.mark.parametrize(("script", "args", "expected", "built"), CLI_CASES)
def test_real_command_line_is_refused_in_one_line(
    script: str,
    args: str,
    expected: tuple[str, ...],
    built: bool,
    cli_results: dict,
    ckpts: dict[str, Path],
    request: pytest.FixtureRequest,
) -> None:
    result, log_dir = cli_results[request.node.callspec.id]
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr, alone=not built)
    for text in expected:
        assert _fill(text, _names(ckpts)) in line
    assert "Traceback" not in result.stdout
    if built:
        assert not list(log_dir.rglob("*.ckpt")), "it trained"
    else:  # Hydra made the run dir before the check; the refusal removed it
        assert not list(log_dir.rglob(".hydra")), "a run dir was left"


def test_help_lists_groups_and_examples() -> None:
    result = run_cli("train.py", "--help", timeout=120)
    assert result.returncode == 0
    for text in ("model: cnn, mlp", "optimizer: adam, adamw, sgd", "python train.py -m"):
        assert text in result.stdout


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs, filled up; unmounted at the end whatever happened (root only)."""
    mount_point = tmp_path / "full"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        with contextlib.suppress(OSError), (mount_point / "filler").open("wb") as filler:
            filler.write(b"\0" * 1024 * 1024)
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_disk_full_at_the_start_leaves_no_empty_files(full_disk: Path) -> None:
    """Hydra writes the config into the run dir before the task starts: on a full disk that
    write fails, and the run dir with its empty config goes again."""
    result = run_cli("train.py", f"hydra.run.dir={full_disk / 'run'}")
    assert result.returncode == FAILED
    assert "No space left on device" in error_line(result.stderr)
    assert not (full_disk / "run").exists()
