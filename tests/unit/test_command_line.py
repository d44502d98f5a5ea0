"""Bad command lines and bad checkpoints, refused before any work: a ``UserError`` with exit code
2 whose one line names the key (or the checkpoint file) and the cause.

Every case goes through what the entry points check before any work (``precheck`` in
tests/unit/conftest.py: Hydra's refusals, each job's values, the checkpoint), in-process: a
fraction of a second each. ``tests/integration/test_cli_errors.py`` runs a sample of them through the real
command line (one ``error:`` line on stderr, no traceback, no run dir).
"""

# the tables below hold one case a line
# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mnist_lit.errors import UserError

from .conftest import FITS_TINY, precheck


def case(script: str, args: str, *expected: str) -> pytest.param:
    """A command line (``{full}`` etc. name the checkpoints) and what its one line must name."""
    return pytest.param(script, args, expected, id=f"{script[:-3]} {args}")


# fmt: off
BAD_OVERRIDES = [
    # keys the config does not have: named, with the key meant when one is spelled alike
    case("train.py", "model.dropuot=0.1", "model.dropuot", "did you mean 'model.dropout'"),
    case("train.py", "+model.dropuot=0.1", "model.dropuot", "dropout'?"),
    case("train.py", "+model.foo=1", "model.foo"),
    case("train.py", "model=mlp model.channels=[8]", "model.channels"),
    case("train.py", "+optimizer.momentum=0.9", "optimizer.momentum"),
    case("train.py", "trainer.max_epoch=3", "trainer.max_epoch", "did you mean 'trainer.max_epochs'"),
    case("train.py", "data.augment={shiftt:2}", "data.augment.shiftt"),
    case("train.py", "tset=false", "tset", "did you mean 'test'"),
    case("train.py", "trainer.gradient_clip_val=1.0", "trainer.gradient_clip_val", "+trainer.gradient_clip_val="),
    # wrong types
    case("train.py", "data.batch_size=1.5", "data.batch_size"),
    case("train.py", "model.dropout=[1]", "model.dropout"),
    case("train.py", "model.dropout=null", "model.dropout"),
    case("train.py", "model.batchnorm=yes", "model.batchnorm"),
    case("train.py", "model.channels=64", "model.channels"),
    case("train.py", "model=mlp model.hidden_sizes=[9,x]", "model.hidden_sizes"),
    case("train.py", "optimizer.lr=abc", "optimizer.lr"),
    case("train.py", "optimizer=sgd optimizer.nesterov=1", "optimizer.nesterov"),
    case("train.py", "trainer.max_epochs=1.5", "trainer.max_epochs"),
    case("train.py", "+trainer.limit_train_batches=x", "trainer.limit_train_batches"),
    case("train.py", "seed=abc", "seed"),
    case("train.py", "test=maybe", "test"),
    # out of range
    case("train.py", "optimizer.lr=-0.1", "optimizer.lr"),
    case("train.py", "optimizer.lr=0", "optimizer.lr"),
    case("train.py", "optimizer.weight_decay=-0.1", "optimizer.weight_decay"),
    case("train.py", "+optimizer.betas=[0.9,1.0]", "optimizer.betas"),
    case("train.py", "optimizer=sgd optimizer.momentum=1.0", "optimizer.momentum"),
    case("train.py", "optimizer=sgd optimizer.momentum=0", "nesterov", "momentum"),
    case("train.py", "model.dropout=1.0", "model.dropout"),
    case("train.py", "model.dropout=1.5", "model.dropout"),
    case("train.py", "model.dropout=-0.1", "model.dropout"),
    case("train.py", "model.channels=[32,0]", "model.channels"),
    case("train.py", "model.channels=[8,8,8,8,8]", "model.channels"),
    case("train.py", "model.hidden=0", "model.hidden"),
    case("train.py", "model.width=0", "model.width"),
    case("train.py", "model=mlp model.hidden_sizes=[0]", "model.hidden_sizes"),
    case("train.py", "data.batch_size=0", "data.batch_size"),
    case("train.py", "data.eval_batch_size=-1", "data.eval_batch_size"),
    case("train.py", "data.val_size=0", "data.val_size"),
    case("train.py", "data.mean=2", "data.mean"),
    case("train.py", "data.std=0", "data.std"),
    case("train.py", "data.augment={shift:-1}", "data.augment.shift"),
    case("train.py", "scheduler.pct_start=1.5", "scheduler.pct_start"),
    case("train.py", "scheduler=step scheduler.step_size=0", "scheduler.step_size"),
    case("train.py", "scheduler=step scheduler.gamma=0", "scheduler.gamma"),
    case("train.py", "scheduler=cosine scheduler.eta_min=-1", "scheduler.eta_min"),
    case("train.py", "trainer.max_epochs=0", "trainer.max_epochs"),
    case("train.py", "+trainer.limit_train_batches=1.5", "trainer.limit_train_batches"),
    case("train.py", "+trainer.limit_val_batches=-1", "trainer.limit_val_batches"),
    case("train.py", "trainer.check_val_every_n_epoch=0", "trainer.check_val_every_n_epoch"),
    case("train.py", "trainer.log_every_n_steps=-1", "trainer.log_every_n_steps"),
    case("train.py", "trainer.deterministic=maybe", "trainer.deterministic"),
    case("train.py", "seed=-1", "seed"),
    case("train.py", "seed=4294967296", "seed"),
    case("train.py", "stop_at=1.5", "stop_at"),
    case("train.py", "label_smoothing=1.0", "label_smoothing"),
    # groups the command needs, groups that clash
    case("train.py", "model=null", "model"),
    case("train.py", "~model", "model"),
    case("train.py", "~optimizer", "optimizer"),
    case("train.py", "~trainer", "trainer"),
    case("eval.py", "ckpt_path={full} ~data", "data"),
    case("train.py", "trainer.max_epochs=-1", "trainer.max_epochs", "scheduler"),
    case("train.py", "+trainer.limit_val_batches=0", "callbacks.early_stopping"),
    case("train.py", "ckpt_path=best", "best", "resume="),
    case("train.py", "hydra.run.dir=", "hydra.run.dir"),
    case("train.py", "hydra.run.dir=/proc/x", "hydra.run.dir=/proc/x", "cannot make it"),
    case("train.py", "~trainer debug=fast_dev_run", "trainer._target_"),
    case("train.py", "~data._target_", "data._target_"),
    case("train.py", "~logger", "callbacks.lr_monitor", "logger"),
    case("train.py", "logger=[]", "callbacks.lr_monitor"),
    case("train.py", "~seed", "seed is required"),
    # options, parsing, sweeps
    case("train.py", "model=cnnn", "model", "cnnn"),
    case("train.py", "model.dropout=[", "model.dropout=["),
    case("train.py", "-m model=mlp,cnn model.dropout=0.2,2", "model.dropout=2"),
    # the other commands (a good checkpoint, so only the bad value is wrong)
    case("eval.py", "ckpt_path={full} seed=abc", "seed"),
    case("eval.py", "", "ckpt_path"),
    case("predict.py", "ckpt_path={full} images=x batch_size=0", "batch_size"),
    case("predict.py", "ckpt_path={full} images=x preprocess.threshold=1", "preprocess.threshold"),
    case("predict.py", "ckpt_path={full} images=x preprocess.box_size=29", "preprocess.box_size"),
    case("predict.py", "ckpt_path={full} images=x output=out.txt", "output"),
    case("predict.py", "ckpt_path={full}", "images"),
    case("export.py", "ckpt_path={full} threads=0", "threads"),
    case("export.py", "ckpt_path={full} atol=0", "atol"),
    case("export.py", "ckpt_path={full} verify=maybe", "verify"),
    case("export.py", "ckpt_path={full} format=tflite", "format"),
]

BAD_CHECKPOINTS = [
    case("train.py", "ckpt_path={missing}", "{missing}", "does not exist"),
    case("eval.py", "ckpt_path={folder}", "{folder}", "ckpt_path={full}"),
    case("predict.py", "ckpt_path={text} images=x", "{text}", "not a PyTorch checkpoint"),
    case("export.py", "ckpt_path={truncated}", "{truncated}", "truncated"),
    case("eval.py", "ckpt_path={state_dict}", "{state_dict}", "state_dict"),
    case("eval.py", "ckpt_path={full} data=fashion_mnist", "{full}", "data=mnist"),
    case("predict.py", "ckpt_path={synthetic} images=x", "{synthetic}", "data=synthetic"),
    case("train.py", "ckpt_path={full} model=mlp", "{full}", "mnist_lit.models.cnn.CNN", "mnist_lit.models.mlp.MLP"),
    case("train.py", "ckpt_path={full}", "{full}", "model.channels=[4,8]"),
    case("train.py", "ckpt_path={weights} " + " ".join(FITS_TINY), "{weights}", "weights only"),
    case("train.py", "ckpt_path={full} data=fashion_mnist " + " ".join(FITS_TINY), "{full}", "data=mnist"),
]
# fmt: on


@pytest.fixture(scope="module")
def names(tiny_ckpts: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """What ``{name}`` stands for in a case: the tiny checkpoints and files that are not ones."""
    folder = tmp_path_factory.mktemp("not-checkpoints")
    data = tiny_ckpts["full"].read_bytes()
    (folder / "truncated.ckpt").write_bytes(data[: len(data) * 9 // 10])
    (folder / "notes.ckpt").write_text("epoch 7: val/acc 0.99\n")
    checkpoint = torch.load(tiny_ckpts["full"], weights_only=True)
    net = {k[4:]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    torch.save(net, folder / "net.pt")
    return {
        **{name: str(path) for name, path in tiny_ckpts.items()},
        "folder": str(tiny_ckpts["run"]),
        "missing": str(tiny_ckpts["run"] / "nope.ckpt"),
        "truncated": str(folder / "truncated.ckpt"),
        "text": str(folder / "notes.ckpt"),
        "state_dict": str(folder / "net.pt"),
    }


def _fill(text: str, names: dict[str, str]) -> str:
    """``text`` with ``{full}`` etc. replaced by the paths (other braces are Hydra's)."""
    for name, value in names.items():
        text = text.replace(f"{{{name}}}", value)
    return text


@pytest.mark.parametrize(("script", "args", "expected"), BAD_OVERRIDES + BAD_CHECKPOINTS)
def test_bad_command_line_is_refused_in_one_line(
    script: str, args: str, expected: tuple[str, ...], names: dict[str, str]
) -> None:
    with pytest.raises(UserError) as caught:
        precheck(script[:-3], _fill(args, names).split())
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "\n" not in message
    for text in expected:
        assert _fill(text, names) in message


@pytest.mark.parametrize(
    "args",
    [
        "",
        "model=mlp optimizer=sgd scheduler=cosine",
        "trainer.precision=bf16-mixed +trainer.limit_train_batches=0.5 trainer.devices=[0]",
        "+optimizer.betas=[0.9,0.99] callbacks.early_stopping.patience=2 data.augment={shift:2}",
        "ckpt_path={full} " + " ".join(FITS_TINY),
        "scheduler.pct_start=1.0 seed=4294967295",
        "scheduler=none trainer.max_epochs=-1 +trainer.max_steps=100",
        "optimizer=sgd optimizer.momentum=0.9 optimizer.nesterov=true",
    ],
)
def test_good_command_lines_pass(args: str, names: dict[str, str]) -> None:
    assert len(precheck("train", _fill(args, names).split())) == 1


def test_a_sweep_checks_every_job() -> None:
    configs = precheck("train", ["-m", "model=mlp,cnn", "optimizer=sgd,adam"])
    chosen = {
        (c.model._target_.rsplit(".")[-1], c.optimizer._target_.rsplit(".")[-1]) for c in configs
    }
    assert chosen == {("MLP", "SGD"), ("MLP", "Adam"), ("CNN", "SGD"), ("CNN", "Adam")}


def test_the_other_commands_resolve_their_ckpt_path(names: dict[str, str], tmp_path: Path) -> None:
    """eval, predict and export check ``ckpt_path`` as a model to load (not to resume)."""
    for script, extra in (("eval", []), ("predict", ["images=x"]), ("export", [])):
        (cfg,) = precheck(script, [f"ckpt_path={names['weights']}", *extra])
        assert cfg.ckpt_path == names["weights"]
