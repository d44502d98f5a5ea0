"""Config composition of every group option, and one-line errors for bad command lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mnist_lit.config import CONFIG_DIR, ConfigError, validate
from mnist_lit.train import build_model, build_trainer

from .conftest import compose_config, run_cli

GROUPS = [
    "data",
    "model",
    "optimizer",
    "scheduler",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


ALL_OPTIONS = [(group, option) for group in GROUPS for option in options(group)]


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_group_option_composes_and_builds(group: str, option: str, tmp_path: Path) -> None:
    """Each option composes, resolves, validates, and its objects instantiate."""
    if group == "trainer" and option == "gpu":
        pytest.skip("needs a GPU to build; composed in test_gpu_trainer_config")
    cfg = compose_config("train", [f"{group}={option}"], tmp_path)
    for key in cfg:  # every interpolation resolves (Hydra's own node is read-only)
        if key != "hydra" and OmegaConf.is_config(cfg[key]):
            OmegaConf.to_container(cfg[key], resolve=True, throw_on_missing=True)
    validate(cfg)
    model = build_model(cfg)
    trainer = build_trainer(cfg)
    assert model.net is not None and trainer is not None
    instantiate(cfg.data)


def test_gpu_trainer_config(tmp_path: Path) -> None:
    cfg = compose_config("train", ["trainer=gpu"], tmp_path)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 1


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    cfg = compose_config("train", [], tmp_path)
    assert cfg.model._target_ == "mnist_lit.models.CNN"
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer._partial_
    assert cfg.scheduler._target_.endswith("OneCycleLR") and cfg.scheduler._partial_
    assert (cfg.data.mean, cfg.data.std, cfg.data.val_size) == (0.1307, 0.3081, 5000)
    assert re.search(r"/train/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d$", cfg.hydra.run.dir)
    assert re.search(r"/train/multiruns/[\d_-]+$", cfg.hydra.sweep.dir)
    assert set(cfg.callbacks) == {
        "model_checkpoint",
        "early_stopping",
        "lr_monitor",
        "progress_bar",
        "sample_batch",
        "test_images",
    }


def test_seed_variants_are_one_override(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model.dropout=0.5", "model.batchnorm=false"], tmp_path)
    net = build_model(cfg).net
    assert "Dropout" in str(net) and "BatchNorm" not in str(net)


def test_experiment_overrides_groups(tmp_path: Path) -> None:
    cfg = compose_config("train", ["experiment=mlp_sgd"], tmp_path)
    assert cfg.model._target_.endswith("MLP") and cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.trainer.max_epochs == 10


def test_scheduler_none_means_constant_lr(tmp_path: Path) -> None:
    cfg = compose_config("train", ["scheduler=none"], tmp_path)
    assert not cfg.scheduler
    assert build_model(cfg).hparams.scheduler is None


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("model.dropout=1.0", "model.dropout"),
        ("model.dropout=-0.1", "model.dropout"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.val_size=60000", "data.val_size"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
    ],
)
def test_bad_values_name_their_key(override: str, key: str, tmp_path: Path) -> None:
    cfg = compose_config("train", [override], tmp_path)
    with pytest.raises(ConfigError, match=key):
        validate(cfg)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model.dropuot=0.5"], "unknown config key 'model.dropuot'"),
        (["model=cnnn"], "'cnnn' is not an option of 'model': choose one of cnn, mlp"),
        (["optimizer.lr=-1"], "optimizer.lr=-1 is invalid: it must be a number > 0"),
        (["model.dropout=1.5"], "model.dropout=1.5 is invalid: it must be a probability in [0, 1)"),
        (["data.batch_size=abc"], "data.batch_size='abc' is invalid"),
        (["-m", "model=mlp,cnn", "model.dropout=0.2,2"], "model.dropout=2 is invalid"),
        (["model.dropout=["], "cannot parse the override 'model.dropout=['"),
    ],
)
def test_command_line_errors_are_one_line(args: list[str], expected: str, tmp_path: Path) -> None:
    """Typos and bad values stop train.py before any work, with one line and exit code 2."""
    result = run_cli("train.py", *args, f"paths.log_dir={tmp_path}", timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [lines[0]] and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not any(tmp_path.iterdir()), "no run dir is made for a bad command"


def test_eval_requires_an_existing_checkpoint(tmp_path: Path) -> None:
    missing = run_cli("eval.py", timeout=120)
    assert missing.returncode == 2
    assert (
        missing.stderr.strip()
        == "error: ckpt_path is required: set it on the command line, ckpt_path=..."
    )
    wrong = run_cli("eval.py", f"ckpt_path={tmp_path}/nope.ckpt", f"paths.log_dir={tmp_path}")
    assert wrong.returncode == 2
    assert (
        wrong.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: checkpoint {tmp_path}/nope.ckpt does not exist")
    )


def test_help_lists_groups_and_examples() -> None:
    result = run_cli("train.py", "--help", timeout=120)
    assert result.returncode == 0
    for text in ("model: cnn, mlp", "optimizer: adam, adamw, sgd", "python train.py -m"):
        assert text in result.stdout
