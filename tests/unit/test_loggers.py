"""Loggers: built from ``conf/logger``, kept intact on resume, given each run's hyper-parameters."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import open_dict

from mnist_lit.loggers import (
    HPARAM_METRICS,
    build_logger,
    build_loggers,
    hparams_for_logging,
    log_hparams,
)

from ..conftest import compose_config


def test_the_configured_loggers_null_ones_dropped(tmp_path: Path) -> None:
    cfg = compose_config("train", ["logger=[tensorboard,csv]"], tmp_path / "run")
    assert [type(lg) for lg in build_loggers(cfg, None)] == [TensorBoardLogger, CSVLogger]
    with open_dict(cfg):
        cfg.logger.csv = None
    assert [type(lg) for lg in build_loggers(cfg, None)] == [TensorBoardLogger]
    assert build_loggers(compose_config("train", ["~logger"], tmp_path / "run"), None) == []


def test_a_resumed_tensorboard_run_purges_what_came_after_its_checkpoint(tmp_path: Path) -> None:
    cfg = compose_config("train", [], tmp_path / "run")
    fresh = build_logger(cfg.logger.tensorboard, resumed_at=None)
    resumed = build_logger(cfg.logger.tensorboard, resumed_at=8)
    assert fresh._kwargs.get("purge_step") is None
    assert resumed._kwargs["purge_step"] == 8
    assert resumed.log_dir == fresh.log_dir  # the same TensorBoard run


def test_a_resumed_csv_run_writes_beside_the_first_parts_metrics(tmp_path: Path) -> None:
    cfg = compose_config("train", ["logger=csv"], tmp_path / "run")
    fresh = build_logger(cfg.logger.csv, resumed_at=None)
    resumed = build_logger(cfg.logger.csv, resumed_at=8)
    assert Path(fresh.log_dir) == tmp_path / "run" / "csv"
    assert Path(resumed.log_dir) == tmp_path / "run" / "csv" / "resumed_at_step_0000008"


def test_hparams_are_flat_and_plain(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=mlp", "seed=3"], tmp_path / "run")
    params = hparams_for_logging(cfg)
    assert params["seed"] == 3 and params["trainer/max_epochs"] == cfg.trainer.max_epochs
    assert params["model/choice"] == "mlp" and params["optimizer/choice"] == "adam"
    assert params["model/dropout"] == cfg.model.dropout
    assert params["model/hidden_sizes"] == str(list(cfg.model.hidden_sizes))  # lists as text
    assert params["optimizer/lr"] == cfg.optimizer.lr
    assert "data/data_dir" not in params and "optimizer/_partial_" not in params
    assert all(isinstance(v, (int, float, str, bool)) for v in params.values())


def test_final_metrics_go_with_the_hparams(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=mlp"], tmp_path / "run")
    csv = CSVLogger(tmp_path / "csv", name="", version="")
    metrics = {"test/acc": 0.9, "val/acc_best": 0.8, "lr-Adam": 0.001}
    log_hparams([csv], cfg, metrics)
    assert "test/acc" in HPARAM_METRICS and "lr-Adam" not in HPARAM_METRICS
    written = (Path(csv.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"hp/test_acc", "hp/val_acc_best"} <= set(written) and "hp/lr-Adam" not in written
    assert "model/dropout" in (Path(csv.log_dir) / "hparams.yaml").read_text()
