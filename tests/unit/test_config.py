"""Config composition of every group option, and the schema that types every value a user sets."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pydantic import BaseModel

from mnist_lit import config as config_module
from mnist_lit.config import CONFIG_DIR, PROJECT_ROOT, log_dir
from mnist_lit.config import check as validate
from mnist_lit.errors import UserError
from mnist_lit.schema import OPTIONS, TARGETS
from mnist_lit.train import build_model, build_trainer

from ..conftest import compose_config

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
    instantiate(cfg.data)  # builds only: the files are read in setup()


def test_gpu_trainer_config(tmp_path: Path) -> None:
    cfg = compose_config("train", ["trainer=gpu"], tmp_path)
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 1
    validate(cfg)


def test_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    cfg = compose_config("train", [], tmp_path)
    assert cfg.model._target_ == "mnist_lit.models.cnn.CNN"
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer._partial_
    assert cfg.optimizer.fused and cfg.trainer.precision == "auto" and cfg.data.on_device
    assert cfg.scheduler._target_.endswith("OneCycleLR") and cfg.scheduler._partial_
    assert (cfg.data.mean, cfg.data.std, cfg.data.val_size) == (0.1307, 0.3081, 5000)
    assert re.search(r"/train/runs/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d$", cfg.hydra.run.dir)
    assert re.search(r"/train/multiruns/[\d_-]+$", cfg.hydra.sweep.dir)
    # the callbacks a run needs (checkpoints, exact resume); a callback added to the default list
    # is no reason for this test to change
    assert set(cfg.callbacks) >= {
        "model_checkpoint",
        "last_checkpoint",
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


# ----------------------------------------------------------------------------- the schema

#: the groups whose values a user tunes; every number and flag in them needs a type and range
TUNED = ("data", "model", "optimizer", "scheduler", "trainer")

#: values the schema leaves to the class that takes them, which refuses a bad one when it is
#: built (Lightning's Trainer; tests/unit/test_build_errors.py shows each refused)
LEFT_TO_THE_CLASS = {
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.fast_dev_run",
    "trainer.val_check_interval",
}


def _numbers_and_flags(node: object, prefix: str) -> list[str]:
    """Dotted keys of the numbers, lists of numbers and flags in a plain container."""
    if isinstance(node, dict):  # (``_partial_`` and the like are Hydra's)
        items = [(key, v) for key, v in node.items() if not key.startswith("_")]
        return [k for key, v in items for k in _numbers_and_flags(v, f"{prefix}.{key}")]
    if isinstance(node, list):  # channels: [32, 64]
        return [prefix] if node and all(isinstance(v, (int, float)) for v in node) else []
    return [prefix] if isinstance(node, (int, float)) else []


def _declared(schema: type[BaseModel], prefix: str) -> set[str]:
    """The dotted keys a schema model declares, nested models included."""
    keys = set()
    for name, field in schema.model_fields.items():
        keys.add(f"{prefix}.{name}")
        for kind in getattr(field.annotation, "__args__", (field.annotation,)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                keys |= _declared(kind, f"{prefix}.{name}")
    return keys


SCHEMA_OPTIONS = [
    pytest.param(g, o, id=f"{g}={o}")
    for g, o in ALL_OPTIONS
    if g in (*TUNED, "debug", "experiment")
]


@pytest.mark.parametrize(("group", "option"), SCHEMA_OPTIONS)
def test_every_number_and_flag_has_a_type_and_range(
    group: str, option: str, tmp_path: Path
) -> None:
    """The schema is complete: each value a config sets is declared by the model of its node."""
    cfg = compose_config("train", [f"{group}={option}"], tmp_path)
    checked = {f".{name}" for name in OPTIONS["train"][0].model_fields} | LEFT_TO_THE_CLASS
    keys = [f".{k}" for k in ("seed", "test") if k in cfg]
    for name in TUNED:
        if not cfg[name]:
            continue
        assert cfg[name]._target_ in TARGETS, f"{name}: {cfg[name]._target_} has no schema"
        checked |= {k.lstrip(".") for k in _declared(TARGETS[cfg[name]._target_], f".{name}")}
        keys += _numbers_and_flags(OmegaConf.to_container(cfg[name]), name)
    assert sorted({k.lstrip(".") for k in keys} - {k.lstrip(".") for k in checked}) == []


@pytest.mark.parametrize("config_name", ["train", "eval"])
def test_each_core_config_has_a_model_of_its_own_keys(config_name: str) -> None:
    """(predict, export and serve: their extras' models, tests/unit/test_predict.py etc.)"""
    assert config_name in OPTIONS


def test_an_unchecked_config_raises_the_first_problem(tmp_path: Path) -> None:
    """``check`` is what each job checks inside Hydra: a ``UserError``, exit code 2."""
    cfg = compose_config("train", ["model.dropout=1.5"], tmp_path)
    with pytest.raises(UserError) as caught:
        validate(cfg)
    assert "model.dropout" in str(caught.value) and caught.value.exit_code == 2


def test_make_finds_the_log_dir_that_conf_local_sets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make tensorboard and make mlflow look where runs go (config.log_dir), conf/local too."""
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    monkeypatch.setattr(config_module, "CONFIG_DIR", conf)
    GlobalHydra.instance().clear()
    assert log_dir() == str(PROJECT_ROOT / "logs")
    (conf / "local" / "default.yaml").write_text(
        f"# @package _global_\npaths:\n  log_dir: {tmp_path / 'elsewhere'}\n"
    )
    GlobalHydra.instance().clear()
    assert log_dir() == str(tmp_path / "elsewhere")
