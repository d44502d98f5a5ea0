"""Loggers: built from ``conf/logger``, kept intact on resume, given each run's hyper-parameters."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow import MlflowClient
from omegaconf import DictConfig, open_dict

from mnist_lit.config import CONFIG_DIR, PROJECT_ROOT, check_command_line
from mnist_lit.errors import UserError
from mnist_lit.trackers.loggers import (
    HPARAM_METRICS,
    PARENT_RUN_FILE,
    TRACKERS_FILE,
    TrackedMLFlowLogger,
    build_logger,
    build_loggers,
    finish_tracking,
    hparams_for_logging,
    log_hparams,
    run_tags,
    tracked_run,
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


# ----------------------------------------------------------------------------- trackers
# MLflow runs are read back through MlflowClient from the SQLite store the config names
# (one for the module: compose_config puts logs/ beside the run dir, and creating a store takes
# seconds). W&B needs its service process: the integration tests read its offline files.


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture
def run_dir(logs: Path, request: pytest.FixtureRequest) -> Path:
    return logs / request.node.name


def _mlflow(cfg: DictConfig) -> MlflowClient:
    return MlflowClient(cfg.logger.mlflow.tracking_uri)


def _history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def _tracker(loggers: list, kind: type) -> Any:
    return next(lg for lg in loggers if isinstance(lg, kind))


def test_logger_many_is_tensorboard_csv_and_mlflow(run_dir: Path) -> None:
    cfg = compose_config("train", ["logger=many"], run_dir)
    kinds = [type(lg) for lg in build_loggers(cfg, None)]
    assert kinds == [TensorBoardLogger, CSVLogger, TrackedMLFlowLogger]
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{run_dir.parent}/mlflow/mlflow.db"


def test_an_mlflow_run_has_the_config_as_params_and_the_tags(run_dir: Path) -> None:
    cfg = compose_config("train", ["logger=mlflow", "tags=[baseline,v 2]"], run_dir)
    (logger,) = build_loggers(cfg, None)
    assert not (run_dir / TRACKERS_FILE).exists()  # nothing before the run starts
    logger.log_metrics({"val/acc": 0.5}, step=7)
    logger.finalize("success")

    client = _mlflow(cfg)
    run = client.get_run(logger.run_id)
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert run.data.tags["baseline"] == "" and run.data.tags["v 2"] == ""
    assert run.data.params["model.dropout"] == str(cfg.model.dropout)
    assert run.data.params["optimizer._target_"] == "torch.optim.Adam"
    assert run.data.params["tags"] == "['baseline', 'v 2']"
    assert _history(client, logger.run_id, "val/acc") == [(7, 0.5)]
    saved = json.loads((run_dir / TRACKERS_FILE).read_text())["mlflow"]
    assert saved["run_id"] == logger.run_id


def test_a_resumed_mlflow_run_goes_on_with_its_run_without_repeating_steps(run_dir: Path) -> None:
    cfg = compose_config("train", ["logger=mlflow"], run_dir)
    (first,) = build_loggers(cfg, None)
    for step in (3, 7):  # killed after logging step 7; its last checkpoint was at step 5
        first.log_metrics({"train/loss": 1.0 / step}, step=step)
    first.log_metrics({"val/acc": 0.5}, step=3)

    resumed_cfg = compose_config("train", ["logger=mlflow", "seed=7"], run_dir)
    (resumed,) = build_loggers(resumed_cfg, resumed_at=5)
    for step in (7, 11):  # step 7 is trained again
        resumed.log_metrics({"train/loss": 1.0 / step, "val/acc": 0.6}, step=step)
    resumed.finalize("success")

    assert resumed.run_id == first.run_id
    client = _mlflow(cfg)
    assert _history(client, first.run_id, "train/loss") == [(3, 1 / 3), (7, 1 / 7), (11, 1 / 11)]
    assert _history(client, first.run_id, "val/acc") == [(3, 0.5), (7, 0.6), (11, 0.6)]
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    # MLflow keeps a param's first value: a new one is a tag
    assert run.data.params["seed"] == "42"
    assert run.data.tags["resume.changed.seed"] == "42 -> 7"


def test_a_sweeps_jobs_are_children_of_one_parent_run(run_dir: Path) -> None:
    sweep = run_dir
    runs = []
    for job in range(2):
        cfg = compose_config("train", ["logger=mlflow", "tags=[s]"], sweep / str(job))
        run = tracked_run(cfg, None)
        runs.append(dataclasses.replace(run, sweep_dir=sweep, name=f"sweep/{job}"))
    loggers = [build_logger(cfg.logger.mlflow, None, run) for run in runs]
    for logger in loggers:
        logger.log_metrics({"val/acc": 0.5}, step=1)
        logger.finalize("success")

    client = _mlflow(cfg)
    parent_id = json.loads((sweep / PARENT_RUN_FILE).read_text())["run_id"]
    parent = client.get_run(parent_id)
    assert parent.info.run_name == sweep.name and parent.info.status == "FINISHED"
    assert parent.data.tags["s"] == "" and parent.data.tags["sweep_dir"] == str(sweep)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert sorted(c.info.run_name for c in children) == ["sweep/0", "sweep/1"]
    assert {c.info.run_id for c in children} == {lg.run_id for lg in loggers}


def test_trackers_log_from_rank_zero_only(run_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    cfg = compose_config("train", ["logger=mlflow"], run_dir)
    (logger,) = build_loggers(cfg, None)
    logger.log_metrics({"val/acc": 0.5}, step=1)
    logger.log_hyperparams({"a": 1})
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    experiment = _mlflow(cfg).get_experiment_by_name(cfg.logger.mlflow.experiment_name)
    named = f"attributes.run_name = '{run_dir.name}'"
    assert experiment is None or not _mlflow(cfg).search_runs([experiment.experiment_id], named)
    assert not (run_dir / TRACKERS_FILE).exists()


def test_the_end_of_a_run_logs_its_checkpoint_and_config_as_artifacts(run_dir: Path) -> None:
    cfg = compose_config("train", ["logger=mlflow"], run_dir)
    (logger,) = build_loggers(cfg, None)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text("seed: 42\n")
    (run_dir / "metrics.json").write_text("{}")
    best = run_dir / "checkpoints" / "epoch_003.ckpt"
    best.parent.mkdir()
    best.write_bytes(b"weights")
    finish_tracking([logger], run_dir, str(best))

    client = _mlflow(cfg)
    listed = {a.path for a in client.list_artifacts(logger.run_id)}
    assert listed == {".hydra", "checkpoints", "metrics.json"}
    assert [a.path for a in client.list_artifacts(logger.run_id, "checkpoints")] == [
        "checkpoints/epoch_003.ckpt"
    ]
    (run_dir / "got").mkdir()
    local = client.download_artifacts(logger.run_id, ".hydra/config.yaml", str(run_dir / "got"))
    assert Path(local).read_text() == "seed: 42\n"


def test_tags_are_in_every_loggers_hparams_and_checked(run_dir: Path) -> None:
    cfg = compose_config("train", ["tags=[a,b]"], run_dir)
    assert hparams_for_logging(cfg)["tags"] == "a, b"
    assert run_tags(compose_config("train", ["tags=one"], run_dir)) == ["one"]
    with pytest.raises(UserError, match=r"^tags=\['a/b'\] is invalid"):
        check_command_line("train", ["tags=[a/b]"])


def test_conf_local_default_is_loaded_when_present(tmp_path: Path) -> None:
    """``optional local: default``: a machine's settings, under the command line's."""
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    (conf / "local" / "default.yaml").unlink(missing_ok=True)

    def compose_from(*overrides: str) -> DictConfig:
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(conf), version_base="1.3", job_name="train"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)

    cfg = compose_from("logger=many")  # none: nothing changes
    assert cfg.paths.log_dir == f"{PROJECT_ROOT}/logs" and "trackers" not in cfg
    assert cfg.logger.mlflow.tracking_uri.startswith("sqlite:///")

    example = (conf / "local" / "example.yaml.txt").read_text()
    example = example.replace("/scratch/${oc.env:USER}/mnist-lit", "/scratch/me")
    example = example.replace(
        "# defaults:\n#   - override /logger: many", "defaults:\n  - override /logger: many"
    )
    (conf / "local" / "default.yaml").write_text(example)
    cfg = compose_from()
    assert cfg.paths.log_dir == "/scratch/me/logs" and cfg.paths.data_dir == "/scratch/me/data"
    assert cfg.hydra.runtime.choices["logger"] == "many"
    assert cfg.logger.mlflow.tracking_uri == "http://mlflow.example.org:5000"
    cfg = compose_from("logger=wandb", "paths.log_dir=/elsewhere")  # the command line wins
    assert cfg.paths.log_dir == "/elsewhere" and list(cfg.logger) == ["wandb"]
    assert cfg.logger.wandb.offline is False and cfg.logger.wandb.entity == "my-team"
    GlobalHydra.instance().clear()


def test_tracker_values_are_checked_before_any_work() -> None:
    with pytest.raises(UserError, match=r"did you mean 'logger\.mlflow\.experiment_name'"):
        check_command_line("train", ["logger=mlflow", "logger.mlflow.experimnt_name=x"])
    with pytest.raises(UserError, match=r"^logger\.wandb\.offline='yes' is invalid"):
        check_command_line("train", ["logger=wandb", "logger.wandb.offline=yes"])
    check_command_line("train", ["logger=wandb", "+logger.wandb.notes=for wandb.init"])


def test_a_tracker_that_is_not_installed_is_one_line(run_dir: Path, monkeypatch) -> None:
    cfg = compose_config("train", ["logger=wandb"], run_dir)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a)
    )
    with pytest.raises(UserError, match=r"needs wandb.*pip install -e '\.\[trackers\]'") as err:
        build_loggers(cfg, None)
    assert err.value.exit_code == 2
