"""Config composition of every group option, and one-line errors for bad command lines."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mnist_lit.config import CONFIG_DIR, RULES, ConfigError, validate
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
    cfg = compose_config("train", [f"{group}={option}"], tmp_path)
    if cfg.trainer.get("accelerator") in ("gpu", "cuda") and not torch.cuda.is_available():
        pytest.skip("needs a GPU to build; composed in test_gpu_trainer_config")
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
    assert cfg.optimizer.fused and cfg.trainer.precision == "auto" and cfg.data.on_device
    assert cfg.scheduler._target_.endswith("OneCycleLR") and cfg.scheduler._partial_
    assert (cfg.data.mean, cfg.data.std, cfg.data.val_size) == (0.1307, 0.3081, 5000)
    assert re.search(r"/train/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d$", cfg.hydra.run.dir)
    assert re.search(r"/train/multiruns/[\d_-]+$", cfg.hydra.sweep.dir)
    assert set(cfg.callbacks) == {
        "model_checkpoint",
        "resume_checkpoint",
        "exact_resume",
        "channels_last",
        "stop_at_target",
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


#: the groups whose values a user tunes; every number and flag in them needs a rule
TUNED = ("data", "model", "optimizer", "scheduler", "trainer")


def _numbers_and_flags(node: object, prefix: str) -> list[str]:
    """Dotted keys of the numbers, lists of numbers and flags in a plain container."""
    if isinstance(node, dict):  # (``_partial_`` and the like are Hydra's)
        items = [(key, v) for key, v in node.items() if not key.startswith("_")]
        return [k for key, v in items for k in _numbers_and_flags(v, f"{prefix}.{key}")]
    if isinstance(node, list):  # channels: [32, 64]
        return [prefix] if node and all(isinstance(v, (int, float)) for v in node) else []
    return [prefix] if isinstance(node, (int, float)) else []


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g, o in ALL_OPTIONS if g in (*TUNED, "debug", "experiment")],
    ids=[f"{g}={o}" for g, o in ALL_OPTIONS if g in (*TUNED, "debug", "experiment")],
)
def test_every_number_and_flag_has_a_type_and_range(
    group: str, option: str, tmp_path: Path
) -> None:
    """The schema is complete: a value a config sets is checked (``data.val_size`` on its own)."""
    cfg = compose_config("train", [f"{group}={option}"], tmp_path)
    checked = {rule.key for rule in RULES} | {"data.val_size"}
    keys = [k for k in ("seed", "test") if k in cfg]
    for name in TUNED:
        keys += _numbers_and_flags(OmegaConf.to_container(cfg[name]) if cfg[name] else {}, name)
    assert sorted(set(keys) - checked) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1 is invalid: it must be a number > 0"),
        ("optimizer.lr=0", "optimizer.lr=0 is invalid: it must be a number > 0"),
        ("model.dropout=1.0", "model.dropout=1.0 is invalid: it must be a probability in [0, 1)"),
        ("model.dropout=-0.1", "model.dropout=-0.1 is invalid: it must be a probability in [0, 1)"),
        ("data.batch_size=0", "data.batch_size=0 is invalid: it must be an integer >= 1"),
        (
            "data.val_size=60000",
            "data.val_size=60000 is invalid: it must be an integer in [1, 59999]",
        ),
        (
            "trainer.max_epochs=0",
            "trainer.max_epochs=0 is invalid: it must be an integer >= 1 or -1 (no limit)",
        ),
    ],
)
def test_bad_values_name_their_key(override: str, message: str, tmp_path: Path) -> None:
    """(tests/test_errors.py has the whole table, through the command-line check.)"""
    cfg = compose_config("train", [override], tmp_path)
    with pytest.raises(ConfigError, match=re.escape(message)):
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
