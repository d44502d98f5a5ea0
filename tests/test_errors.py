"""Bad command lines and bad checkpoints: exit code 2 and one ``error:`` line, before any work.

Every case goes through the check that ``train.py`` (``eval.py``, ``predict.py``, ``export.py``)
runs before Hydra starts, ``check_command_line``, and must end with exit code 2 and exactly one
line on stderr, ``error: ...``, that names the key (or the checkpoint file) and what it takes.

``BAD_OVERRIDES``: the table, in-process (composition only, a fraction of a second each);
``tests/test_config.py`` has the first few values and command lines.
``CLI_CASES``: every bad checkpoint and one override of each kind through the real command line
(``python train.py ...``), which also shows no traceback and no run dir; slow, as every command
line run here is (each one imports torch and Lightning).
"""

# the tables below hold one case a line
# ruff: noqa: E501

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from mnist_lit.classifier import LitClassifier
from mnist_lit.config import check_command_line
from mnist_lit.data import MNISTDataModule

from .conftest import DATA_DIR, run_cli

#: the network of the checkpoints made here: not the default sizes of conf/model/cnn.yaml
TINY_CNN = {"_target_": "mnist_lit.models.CNN", "channels": [8, 16], "hidden": 32, "dropout": 0.1}
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
    if paths["full"].is_file():
        return paths
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
    paths["truncated"].write_bytes(data[: len(data) // 2])
    paths["text"].write_text("epoch 7: val/acc 0.99\n")
    torch.save(model.net.state_dict(), paths["state_dict"])
    return paths


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path) -> dict[str, Path]:
    return tiny_checkpoints(tmp_path_factory.getbasetemp())


@pytest.fixture(autouse=True)
def _no_hydra_left() -> None:
    GlobalHydra.instance().clear()  # check_command_line initializes Hydra itself


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def case(script: str, args: str, *expected: str) -> pytest.param:
    """A command line (``{full}`` etc. name the checkpoints) and what its one line must say."""
    return pytest.param(script, args, expected, id=f"{script[:-3]} {args}")


# ----------------------------------------------------------------------------- the table

_CNN_ARGS = "mnist_lit.models.CNN takes channels, hidden, dropout, batchnorm, width"
_PROBABILITY = "it must be a probability in [0, 1), 0 = off"
_COUNT_OR_FRACTION = "an integer >= 0 (batches) or a float in [0.0, 1.0] (a fraction)"
_SEED = "an integer in [0, 4294967295]"
_NOT_OURS = "is not a LitClassifier checkpoint: "
_USE_OURS = "pass one that train.py saved (<run dir>/checkpoints/*.ckpt)"
_FRESH = "or ckpt_path=null to start fresh"

# fmt: off
BAD_OVERRIDES = [
    # keys the config does not have: the arguments of the class it builds name the fix
    case("train.py", "model.dropuot=0.1", "key 'model.dropuot': did you mean 'model.dropout'?", _CNN_ARGS),
    case("train.py", "+model.dropuot=0.1", "key 'model.dropuot': did you mean 'model.dropout'?", _CNN_ARGS),
    case("train.py", "+model.foo=1", "unknown config key 'model.foo': " + _CNN_ARGS),
    case("train.py", "model=mlp model.channels=[8]", "key 'model.channels'", "MLP takes hidden_sizes, dropout"),
    case("train.py", "+optimizer.momentum=0.9", "key 'optimizer.momentum'", "Adam takes lr, betas, eps"),
    case("train.py", "trainer.max_epoch=3", "did you mean 'trainer.max_epochs'?", "Trainer takes accelerator, "),
    case("train.py", "+trainer.max_epoch=3", "key 'trainer.max_epoch': did you mean 'trainer.max_epochs'?"),
    case("train.py", "+callbacks.early_stopping.patiense=3", "did you mean 'callbacks.early_stopping.patience'?"),
    case("train.py", "data.augment={shiftt:2}", "key 'data.augment.shiftt'", "RandomAffine takes shift, degrees"),
    case("train.py", "tset=false", "unknown config key 'tset': did you mean 'test'?", "'+tset=...'"),
    case("train.py", "trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val is not in the config yet: add it with '+trainer.gradient_clip_val=1.0'"),
    case("train.py", "+callbacks.foo=1", "callbacks.foo=1 is invalid", "a config with a _target_ (the class to build)"),
    case("train.py", "model._target_=mnist_lit.Nope", "model._target_='mnist_lit.Nope' is invalid", "No module named"),
    # wrong types
    case("train.py", "data.batch_size=1.5", "data.batch_size=1.5 is invalid", "an integer >= 1"),
    case("train.py", "model.dropout=[1]", "model.dropout=[1] is invalid", _PROBABILITY),
    case("train.py", "model.dropout=null", "model.dropout=null is invalid", _PROBABILITY),
    case("train.py", "model.batchnorm=yes", "model.batchnorm='yes' is invalid", "true or false"),
    case("train.py", "model.channels=64", "model.channels=64 is invalid", "a list of at most 4 integers"),
    case("train.py", "model=mlp model.hidden_sizes=[9,x]", "hidden_sizes=[9, 'x'] is invalid", "a list of integers"),
    case("train.py", "optimizer.lr=abc", "optimizer.lr='abc' is invalid", "a number > 0"),
    case("train.py", "optimizer=sgd optimizer.nesterov=1", "optimizer.nesterov=1 is invalid", "true or false"),
    case("train.py", "trainer.max_epochs=1.5", "trainer.max_epochs=1.5 is invalid", "an integer >= 1 or -1"),
    case("train.py", "+trainer.limit_train_batches=x", "limit_train_batches='x' is invalid", _COUNT_OR_FRACTION),
    case("train.py", "scheduler.pct_start=1", "scheduler.pct_start=1 is invalid", "a float in [0.0, 1.0]"),
    case("train.py", "seed=abc", "seed='abc' is invalid", _SEED),
    case("train.py", "test=maybe", "test='maybe' is invalid", "true or false"),
    # out of range
    case("train.py", "optimizer.weight_decay=-0.1", "weight_decay=-0.1 is invalid", "a number >= 0"),
    case("train.py", "+optimizer.betas=[0.9,1.0]", "betas=[0.9, 1.0] is invalid", "two numbers in [0, 1)"),
    case("train.py", "optimizer=sgd optimizer.momentum=1.0", "momentum=1.0 is invalid", "a number in [0, 1)"),
    case("train.py", "optimizer=sgd optimizer.momentum=0", "nesterov=true needs optimizer.momentum > 0", "or optimizer.nesterov=false"),
    case("train.py", "model.channels=[32,0]", "model.channels=[32, 0] is invalid", "integers >= 1"),
    case("train.py", "model.channels=[8,8,8,8,8]", "model.channels=[8, 8, 8, 8, 8] is invalid", "at most 4"),
    case("train.py", "model.hidden=0", "model.hidden=0 is invalid", "an integer >= 1"),
    case("train.py", "model.width=0", "model.width=0 is invalid", "a number > 0"),
    case("train.py", "model=mlp model.hidden_sizes=[0]", "hidden_sizes=[0] is invalid", "a list of integers >= 1"),
    case("train.py", "data.eval_batch_size=-1", "data.eval_batch_size=-1 is invalid", "an integer >= 1"),
    case("train.py", "data.val_size=0", "data.val_size=0 is invalid", "an integer in [1, 59999]"),
    case("train.py", "data=fashion_mnist data.val_size=70000", "data.val_size=70000 is invalid", "[1, 59999]", "has 60000 images"),
    case("train.py", "data.mean=2", "data.mean=2 is invalid", "a number in [0, 1]"),
    case("train.py", "data.std=0", "data.std=0 is invalid", "a number > 0"),
    case("train.py", "data.augment={shift:-1}", "data.augment.shift=-1 is invalid", "a number of pixels >= 0"),
    case("train.py", "scheduler.pct_start=1.5", "scheduler.pct_start=1.5 is invalid", "a float in [0.0, 1.0]"),
    case("train.py", "scheduler=step scheduler.step_size=0", "step_size=0 is invalid", "an integer >= 1"),
    case("train.py", "scheduler=step scheduler.gamma=0", "scheduler.gamma=0 is invalid", "a number > 0"),
    case("train.py", "scheduler=cosine scheduler.eta_min=-1", "eta_min=-1 is invalid", "a number >= 0"),
    case("train.py", "trainer.devices=0", "trainer.devices=0 is invalid", "-1 (all), auto, or a list"),
    case("train.py", "trainer.accelerator=gpuu", "accelerator='gpuu' is invalid", "one of auto, gpu, cpu"),
    case("train.py", "trainer.precision=15", "precision=15 is invalid", "one of auto, 64, 32, 16, ", "bf16-mixed"),
    case("train.py", "+trainer.limit_train_batches=1.5", "batches=1.5 is invalid", _COUNT_OR_FRACTION),
    case("train.py", "+trainer.limit_val_batches=-1", "limit_val_batches=-1 is invalid", _COUNT_OR_FRACTION),
    case("train.py", "+trainer.val_check_interval=1.5", "interval=1.5 is invalid", "a float in (0.0, 1.0]"),
    case("train.py", "trainer.check_val_every_n_epoch=0", "n_epoch=0 is invalid", "an integer >= 1"),
    case("train.py", "trainer.log_every_n_steps=-1", "log_every_n_steps=-1 is invalid", "an integer >= 0"),
    case("train.py", "+trainer.fast_dev_run=-1", "fast_dev_run=-1 is invalid", "a number of batches >= 0"),
    case("train.py", "+trainer.accumulate_grad_batches=0", "grad_batches=0 is invalid", "an integer >= 1"),
    case("train.py", "trainer.deterministic=maybe", "deterministic='maybe' is invalid", "true, false or warn"),
    case("train.py", "seed=-1", "seed=-1 is invalid", _SEED),
    # the other commands (a good checkpoint, so only the bad value is wrong)
    case("eval.py", "ckpt_path={full} seed=abc", "seed='abc' is invalid", _SEED),
    case("eval.py", "ckpt_path={full} trainer.devices=x", "devices='x' is invalid", "a list of device indices"),
    case("predict.py", "ckpt_path={full} images=x batch_size=0", "batch_size=0 is invalid", "an integer >= 1"),
    case("predict.py", "ckpt_path={full} images=x preprocess.threshold=1", "threshold=1 is invalid", "(0, 1)"),
    case("predict.py", "ckpt_path={full} images=x preprocess.box_size=29", "box_size=29 is invalid", "[1, 28]"),
    case("export.py", "ckpt_path={full} threads=0", "threads=0 is invalid", "an integer >= 1, or null"),
    case("export.py", "ckpt_path={full} atol=0", "atol=0 is invalid", "a number > 0"),
    case("export.py", "ckpt_path={full} verify=maybe", "verify='maybe' is invalid", "true or false"),
]

BAD_CHECKPOINTS = [
    case("train.py", "ckpt_path={missing}", "checkpoint {missing} does not exist", "pass ckpt_path=<run dir>/checkpoints/<file>.ckpt"),
    case("eval.py", "ckpt_path={folder}", "checkpoint {folder} is a folder, not a file: pass ckpt_path={full}"),
    case("predict.py", "ckpt_path={text} images=x", "checkpoint {text} " + _NOT_OURS, "it is not a PyTorch checkpoint file", _USE_OURS),
    case("export.py", "ckpt_path={truncated}", "checkpoint {truncated} " + _NOT_OURS, "the file is truncated or damaged", _USE_OURS),
    case("eval.py", "ckpt_path={state_dict}", "checkpoint {state_dict} " + _NOT_OURS, "it is a plain state_dict", _USE_OURS),
    case("eval.py", "ckpt_path={full} data=fashion_mnist", "checkpoint {full} was trained on mnist, but data=fashion_mnist is selected: pass data=mnist"),
    case("train.py", "ckpt_path={full} model=mlp", "checkpoint {full} holds a mnist_lit.models.CNN(channels=[8,16], hidden=32, dropout=0.1)", "not the mnist_lit.models.MLP the model config builds: select that network, " + _FRESH),
    case("train.py", "ckpt_path={full}", "checkpoint {full} holds a mnist_lit.models.CNN with other layers", "pass model.channels=[8,16] model.hidden=32 model.dropout=0.1, " + _FRESH),
    case("train.py", "ckpt_path={weights} " + " ".join(FITS_TINY), "checkpoint {weights} holds the weights only", "pass <run dir>/checkpoints/last.ckpt, " + _FRESH),
    case("train.py", "ckpt_path={full} data=fashion_mnist " + " ".join(FITS_TINY), "checkpoint {full} was trained on mnist", "pass data=mnist"),
]

#: through the real command line: every bad checkpoint and one override of each kind
CLI_CASES = [
    *BAD_CHECKPOINTS,
    *(p for p in BAD_OVERRIDES if p.id in {
        "train +model.foo=1", "train model.dropout=[1]", "train trainer.max_epochs=1.5",
        "train data=fashion_mnist data.val_size=70000",
    }),
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


# ----------------------------------------------------------------------------- in-process


@pytest.mark.parametrize(("script", "args", "expected"), BAD_OVERRIDES + BAD_CHECKPOINTS)
def test_bad_command_line_fails_with_one_line(
    script: str,
    args: str,
    expected: tuple[str, ...],
    ckpts: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    names = _names(ckpts)
    with pytest.raises(SystemExit) as info:
        check_command_line(script[:-3], _fill(args, names).split())
    assert info.value.code == 2
    out, err = capsys.readouterr()
    line = _one_error_line(err)
    for text in expected:
        assert _fill(text, names) in line
    assert out == ""


@pytest.mark.parametrize(
    "args",
    [
        "",
        "model=mlp optimizer=sgd scheduler=cosine",
        "trainer.precision=bf16-mixed +trainer.limit_train_batches=0.5 trainer.devices=[0]",
        "+optimizer.betas=[0.9,0.99] callbacks.early_stopping.patience=2 data.augment={shift:2}",
        "ckpt_path={full} " + " ".join(FITS_TINY),
        "ckpt_path=last",
    ],
)
def test_good_command_lines_pass(args: str, ckpts: dict[str, Path]) -> None:
    check_command_line("train", _fill(args, _names(ckpts)).split())


# ----------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def cli_results(ckpts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Every CLI case run once, three at a time (each spends its seconds importing), by id:
    its result and the log dir it was given (where a run dir would appear)."""
    logs = tmp_path_factory.mktemp("cli-logs")
    names = _names(ckpts)

    def run(numbered: tuple[int, pytest.param]) -> tuple:
        number, param = numbered
        script, args, _ = param.values
        log_dir = logs / str(number)
        command = [*_fill(args, names).split(), f"paths.log_dir={log_dir}"]
        return param.id, (run_cli(script, *command, timeout=300), log_dir)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, enumerate(CLI_CASES)))


@pytest.mark.slow
@pytest.mark.parametrize(("script", "args", "expected"), CLI_CASES)
def test_real_command_line_fails_before_any_work(
    script: str,
    args: str,
    expected: tuple[str, ...],
    cli_results: dict,
    ckpts: dict[str, Path],
    request: pytest.FixtureRequest,
) -> None:
    result, log_dir = cli_results[request.node.callspec.id]
    assert result.returncode == 2, result.stderr
    line = _one_error_line(result.stderr)
    for text in expected:
        assert _fill(text, _names(ckpts)) in line
    assert "Traceback" not in result.stdout + result.stderr
    assert not log_dir.exists(), "a run dir was made"
