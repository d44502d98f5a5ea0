"""Values a class checks itself when it is built (Lightning's Trainer, a callback, the data
module, the network): train.py and eval.py report them as one ``UserError`` naming the config
group and the class's reason (``train.built_from``), exit code 2, before any training.

Each case goes through what the command runs, in-process: the check before Hydra (``precheck``),
then ``train`` on the synthetic data; whichever refuses it must name it.
"""

# the table below holds one case a line
# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path

import pytest

from mnist_lit.errors import UserError
from mnist_lit.eval import evaluate
from mnist_lit.train import built_from, train

from ..conftest import compose_config
from .conftest import precheck

# fmt: off
CASES = [
    # Lightning's Trainer arguments
    pytest.param("+trainer.max_epoch=3", "trainer", "max_epoch", id="unknown Trainer argument"),
    pytest.param("trainer.devices=0", "trainer", "devices=0", id="devices"),
    pytest.param("trainer.accelerator=gpuu", "trainer", "gpuu", id="accelerator"),
    pytest.param("trainer.precision=15", "trainer", "15", id="precision"),
    pytest.param("trainer.val_check_interval=1.5", "trainer", "val_check_interval", id="val_check_interval"),
    pytest.param("trainer.val_check_interval=x", "trainer", "val_check_interval", id="val_check_interval type"),
    pytest.param("+trainer.fast_dev_run=-1", "trainer", "fast_dev_run", id="fast_dev_run"),
    pytest.param("+trainer.accumulate_grad_batches=0", "trainer", "accumulate_grad_batches", id="accumulate_grad_batches"),
    # callbacks (built with the trainer)
    pytest.param("+callbacks.early_stopping.patiense=3", "callbacks", "patiense", id="callback argument"),
    pytest.param("+callbacks.foo=1", "callbacks", "int", id="callback that is not a config"),
    # the network, the data module, the schedule
    pytest.param("model._target_=mnist_lit.Nope", "model", "mnist_lit.Nope", id="network class"),
    pytest.param("data.val_size=300", "data", "val_size", id="val_size of all the images"),
    pytest.param("scheduler.pct_start=1", "scheduler.pct_start", "pct_start", id="int pct_start"),
]
# fmt: on


@pytest.mark.parametrize(("override", "key", "cause"), CASES)
def test_a_value_the_class_refuses_is_one_line_naming_it(
    override: str, key: str, cause: str, train_cfg
) -> None:
    cfg = train_cfg(override)
    with pytest.raises(UserError) as caught:
        precheck("train", list(cfg.hydra.overrides.task))
        train(cfg)
    message = str(caught.value)
    assert caught.value.exit_code == 2
    assert "\n" not in message
    assert key in message and cause in message
    assert not (Path(cfg.paths.output_dir) / "checkpoints").exists(), "it trained"


def test_another_data_set_checks_its_own_size(tmp_path: Path) -> None:
    """Fashion-MNIST's module refuses a val_size of more than its 60,000 training images."""
    cfg = compose_config("train", ["data=fashion_mnist", "data.val_size=70000"], tmp_path / "run")
    with pytest.raises(UserError) as caught:
        train(cfg)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("data") and "val_size=70000" in str(caught.value)


def test_eval_reports_a_trainer_value_it_refuses(tiny_ckpts: dict, tmp_path: Path) -> None:
    cfg = compose_config("eval", [f"ckpt_path={tiny_ckpts['full']}", "trainer.devices=x"], tmp_path)
    with pytest.raises(UserError) as caught:
        evaluate(cfg)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("trainer") and "devices" in str(caught.value)


@pytest.mark.parametrize(
    "error", [TypeError("bad"), ValueError("bad"), KeyError("bad")], ids=lambda e: type(e).__name__
)
def test_built_from_names_the_group(error: Exception) -> None:
    with pytest.raises(UserError) as caught, built_from("model"):
        raise error
    assert caught.value.exit_code == 2 and str(caught.value).startswith("model: ")


def test_built_from_passes_other_errors_and_user_errors_through() -> None:
    with pytest.raises(UserError, match="mine") as caught, built_from("data"):
        raise UserError("mine", exit_code=1)
    assert caught.value.exit_code == 1
    with pytest.raises(RuntimeError), built_from("data"):
        raise RuntimeError("a bug, not a bad value")
