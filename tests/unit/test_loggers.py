"""Loggers: built from ``conf/logger`` as the core builds them, kept intact on resume, given each
run's hyper-parameters and final metrics; the trackers (``mnist_lit.trackers``) find their run
from their own arguments and Hydra's runtime."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from mlflow import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from mnist_lit.config import CONFIG_DIR, PROJECT_ROOT
from mnist_lit.errors import UserError
from mnist_lit.trackers import TRACKERS_FILE, TrackedMLFlowLogger, TrackedWandbLogger
from mnist_lit.trackers.mlflow_logger import PARENT_RUN_FILE, finish_sweep_parent
from mnist_lit.train import (
    HPARAM_METRICS,
    RESULTS_FILE,
    build_logger,
    build_trainer,
    checkpoint_step,
    finish_logging,
    run_tags,
)

from ..conftest import compose_config
from .conftest import precheck


def compose_job(
    run_dir: Path,
    *overrides: str,
    sweep_dir: Path | None = None,
    job: int = 0,
    output_subdir: str = ".hydra",
    log_dir: Path | None = None,
) -> DictConfig:
    """The config of a job running in ``run_dir`` (a sweep's ``job`` when ``sweep_dir`` is
    given), with the composed config saved where Hydra saves it before the task runs;
    ``paths.log_dir`` is ``log_dir``, or the run dir's parent."""
    extra = [f"hydra.output_subdir={output_subdir}"]
    if sweep_dir is not None:
        extra += ["hydra.mode=MULTIRUN", f"hydra.sweep.dir={sweep_dir}"]
    cfg = compose_config("train", [*overrides, *extra], run_dir)
    with read_write(cfg.hydra):
        cfg.hydra.job.num = job
    if log_dir is not None:
        cfg.paths.log_dir = str(log_dir)
    HydraConfig.instance().set_config(cfg)
    task = copy.deepcopy(cfg)
    with open_dict(task):
        del task["hydra"]
    (run_dir / output_subdir).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(task, run_dir / output_subdir / "config.yaml")
    return cfg


def built(cfg: DictConfig, key: str) -> Any:
    """The logger ``logger.<key>`` as ``train.build_trainer`` builds it."""
    resumed_at = checkpoint_step(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    return build_logger(cfg.logger[key], resumed_at)


def checkpoint_at(run_dir: Path, step: int) -> Path:
    """A checkpoint of ``run_dir`` saved at ``step`` (all a tracker reads of it)."""
    path = run_dir / "checkpoints" / "resume" / f"step_{step:07d}.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step}, path)
    return path


def write_results(run_dir: Path, best_ckpt: str = "") -> None:
    """The ``metrics.json`` the core writes at the run's end, before it finalizes the loggers."""
    (run_dir / RESULTS_FILE).write_text(json.dumps({"metrics": {}, "best_ckpt": best_ckpt}))


# ----------------------------------------------------------------------------- the core's part


def test_the_configured_loggers_null_ones_dropped(tmp_path: Path) -> None:
    cfg = compose_config("train", ["logger=[tensorboard,csv]"], tmp_path / "run")
    assert [type(lg) for lg in build_trainer(cfg).loggers] == [TensorBoardLogger, CSVLogger]
    with open_dict(cfg):
        cfg.logger.csv = None
    assert [type(lg) for lg in build_trainer(cfg).loggers] == [TensorBoardLogger]
    assert build_trainer(compose_config("train", ["~logger"], tmp_path / "run")).loggers == []


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


def test_hparams_are_flat_and_plain_with_the_final_metrics(tmp_path: Path) -> None:
    cfg = compose_config("train", ["model=mlp", "seed=3"], tmp_path / "run")
    tensorboard = TensorBoardLogger(tmp_path / "tb", name="", version="")
    csv = CSVLogger(tmp_path / "csv", name="", version="")
    metrics = {"test/acc": 0.9, "val/acc_best": 0.8, "lr-Adam": 0.001}
    finish_logging([tensorboard, csv], cfg, metrics, step=12)

    params = yaml.safe_load((Path(tensorboard.log_dir) / "hparams.yaml").read_text())
    assert params["seed"] == 3 and params["trainer/max_epochs"] == cfg.trainer.max_epochs
    assert params["model/dropout"] == cfg.model.dropout
    assert params["model/hidden_sizes"] == str(list(cfg.model.hidden_sizes))  # lists as text
    assert params["optimizer/lr"] == cfg.optimizer.lr
    assert "data/data_dir" not in params and "optimizer/_partial_" not in params
    assert all(isinstance(v, (int, float, str, bool)) for v in params.values())
    # the others get the final metrics alone, at the run's last step
    assert "test/acc" in HPARAM_METRICS and "lr-Adam" not in HPARAM_METRICS
    rows = (Path(csv.log_dir) / "metrics.csv").read_text().splitlines()
    written = rows[0].split(",")
    assert {"hp/test_acc", "hp/val_acc_best"} <= set(written) and "hp/lr-Adam" not in written
    assert dict(zip(written, rows[1].split(","), strict=True))["step"] == "12"


def test_tags_are_in_every_loggers_hparams_and_checked(tmp_path: Path) -> None:
    cfg = compose_config("train", ["tags=[a,b]"], tmp_path / "run")
    tensorboard = TensorBoardLogger(tmp_path / "tb", name="", version="")
    finish_logging([tensorboard], cfg, {}, step=0)
    assert yaml.safe_load((Path(tensorboard.log_dir) / "hparams.yaml").read_text())["tags"] == (
        "a, b"
    )
    assert run_tags(compose_config("train", ["tags=one"], tmp_path / "run")) == ["one"]
    with pytest.raises(UserError, match=r"^tags(\.0)?=.*'a/b'.* is invalid"):
        precheck("train", ["tags=[a/b]"])


# ----------------------------------------------------------------------------- trackers
# MLflow runs are read back through MlflowClient from the SQLite store the config names
# (one for the module: compose_config puts logs/ beside the run dir, and creating a store takes
# seconds). W&B needs its service process: these tests build its logger without starting a run,
# the integration tests read its offline files.


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


def test_logger_many_is_tensorboard_csv_and_mlflow(run_dir: Path) -> None:
    cfg = compose_job(run_dir, "logger=many")
    kinds = [type(lg) for lg in build_trainer(cfg).loggers]
    assert kinds == [TensorBoardLogger, CSVLogger, TrackedMLFlowLogger]
    assert cfg.logger.mlflow.tracking_uri == f"sqlite:///{run_dir.parent}/mlflow/mlflow.db"


def test_an_mlflow_run_has_the_config_as_params_and_the_tags(run_dir: Path) -> None:
    cfg = compose_job(run_dir, "logger=mlflow", "tags=[baseline,v 2]")
    logger = built(cfg, "mlflow")
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
    assert run.data.params["paths.output_dir"] == str(run_dir)  # resolved in the job
    assert "hydra.run.dir" not in run.data.params
    assert _history(client, logger.run_id, "val/acc") == [(7, 0.5)]
    saved = json.loads((run_dir / TRACKERS_FILE).read_text())["mlflow"]
    assert saved["run_id"] == logger.run_id


@pytest.mark.parametrize(
    ("where", "name"),
    [
        ("train/runs/2026-12-05_06-00-00", "train/runs/2026-12-05_06-00-00"),
        ("x/kill", "x/kill"),  # hydra.run.dir=logs/x/kill
        ("../elsewhere/kill", None),  # outside paths.log_dir: the whole path
    ],
)
def test_a_run_is_named_by_where_it_is_in_the_log_dir(
    logs: Path, where: str, name: str | None
) -> None:
    """MLflow and W&B show the run dir relative to ``paths.log_dir``, not only its last part."""
    run_dir = (logs / where).resolve()
    cfg = compose_job(run_dir, "logger=[mlflow,wandb]", log_dir=logs)
    mlflow_logger, wandb_logger = built(cfg, "mlflow"), built(cfg, "wandb")
    mlflow_logger.log_metrics({"val/acc": 0.5}, step=1)
    mlflow_logger.finalize("success")
    run = _mlflow(cfg).get_run(mlflow_logger.run_id)
    assert run.info.run_name == (name or str(run_dir))
    assert wandb_logger.init_arguments["name"] == run.info.run_name


def test_a_resumed_mlflow_run_goes_on_with_its_run_without_repeating_steps(run_dir: Path) -> None:
    cfg = compose_job(run_dir, "logger=mlflow")
    first = built(cfg, "mlflow")
    for step in (3, 7):  # killed after logging step 7; its last checkpoint was at step 5
        first.log_metrics({"train/loss": 1.0 / step}, step=step)
    first.log_metrics({"val/acc": 0.5}, step=3)

    # resume=: the run's overrides and the newest checkpoint, Hydra's files in .hydra/resume
    ckpt = checkpoint_at(run_dir, 5)
    resumed_cfg = compose_job(
        run_dir, "logger=mlflow", "seed=7", f"ckpt_path={ckpt}", output_subdir=".hydra/resume"
    )
    resumed = built(resumed_cfg, "mlflow")
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
    assert "resume.changed.ckpt_path" not in run.data.tags  # resume= set it, not the user


def test_an_mlflow_run_logs_each_step_once_and_opens_in_the_training_view(run_dir: Path) -> None:
    """Lightning sends ``epoch`` with a step's train metrics and again with its val metrics:
    it is stored once. The experiment is tagged for MLflow 3's model-training view, not GenAI."""
    cfg = compose_job(run_dir, "logger=mlflow")
    logger = built(cfg, "mlflow")
    logger.log_metrics({"train/loss": 0.5, "epoch": 0.0}, step=199)
    logger.log_metrics({"val/acc": 0.9, "epoch": 0.0}, step=199)
    logger.log_metrics({"train/loss": 0.4, "epoch": 1.0}, step=399)
    logger.log_metrics({"val/acc": 0.95, "epoch": 1.0}, step=399)
    client = _mlflow(cfg)
    assert _history(client, logger.run_id, "epoch") == [(199, 0.0), (399, 1.0)]
    experiment = client.get_experiment(logger.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_run_started_from_another_runs_checkpoint_is_a_new_tracker_run(run_dir: Path) -> None:
    cfg = compose_job(run_dir / "first", "logger=mlflow")
    first = built(cfg, "mlflow")
    first.log_metrics({"val/acc": 0.5}, step=3)
    ckpt = checkpoint_at(run_dir / "first", 3)
    second = built(compose_job(run_dir / "second", "logger=mlflow", f"ckpt_path={ckpt}"), "mlflow")
    second.log_metrics({"val/acc": 0.6}, step=3)  # its own run: nothing to skip
    assert second.run_id != first.run_id
    assert _history(_mlflow(cfg), second.run_id, "val/acc") == [(3, 0.6)]


def test_a_sweeps_jobs_are_children_of_one_parent_run(run_dir: Path) -> None:
    """Named by where they are in the log dir: the parent after its sweep dir, each child
    after the sweep dir and its job number."""
    sweep = run_dir / "train" / "multiruns" / "2026-12-05_06-00-00"
    loggers = []
    for job in range(2):
        overrides = ("logger=mlflow", "tags=[s]")
        cfg = compose_job(sweep / str(job), *overrides, sweep_dir=sweep, job=job, log_dir=run_dir)
        loggers.append(built(cfg, "mlflow"))
    for logger in loggers:
        logger.log_metrics({"val/acc": 0.5}, step=1)
        logger.finalize("success")

    client = _mlflow(cfg)
    parent_id = json.loads((sweep / PARENT_RUN_FILE).read_text())["run_id"]
    parent = client.get_run(parent_id)
    name = "train/multiruns/2026-12-05_06-00-00"
    assert parent.info.run_name == name and parent.info.status == "FINISHED"
    assert parent.data.tags["s"] == "" and parent.data.tags["sweep_dir"] == str(sweep)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert sorted(c.info.run_name for c in children) == [f"{name}/0", f"{name}/1"]
    assert {c.info.run_id for c in children} == {lg.run_id for lg in loggers}


def test_a_sweeps_parent_run_gets_its_report_shared_params_and_best_job(run_dir: Path) -> None:
    """Once the report is written (the sweep-report callback calls finish_sweep_parent), the
    parent run holds the params every job shared, the best job's metrics and the report."""
    sweep = run_dir
    loggers = []
    for job, dropout in enumerate((0.1, 0.3)):
        overrides = ("logger=mlflow", f"model.dropout={dropout}")
        cfg = compose_job(sweep / str(job), *overrides, sweep_dir=sweep, job=job)
        loggers.append(built(cfg, "mlflow"))
    for logger, best in zip(loggers, (0.91, 0.95), strict=True):
        logger.log_metrics({"val/acc_best": best, "val/loss": 1 - best}, step=1)
        logger.finalize("success")
    (sweep / "report.md").write_text("# the sweep\n")
    (sweep / "report.csv").write_text("job,val/acc_best\n")

    parent_id = finish_sweep_parent(sweep)
    client = _mlflow(cfg)
    parent = client.get_run(parent_id)
    assert parent.data.params["optimizer._target_"] == "torch.optim.Adam"  # shared
    assert "model.dropout" not in parent.data.params  # differs between the jobs
    assert parent.data.metrics["best/val/acc_best"] == 0.95
    assert parent.data.tags["best_run_id"] == loggers[1].run_id
    artifacts = {a.path for a in client.list_artifacts(parent_id, "sweep")}
    assert artifacts == {"sweep/report.md", "sweep/report.csv"}
    assert finish_sweep_parent(sweep / "0") is None  # no parent run recorded there


def test_trackers_log_from_rank_zero_only(run_dir: Path, monkeypatch) -> None:
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    cfg = compose_job(run_dir, "logger=mlflow")
    logger = built(cfg, "mlflow")
    logger.log_metrics({"val/acc": 0.5}, step=1)
    logger.log_hyperparams({"a": 1})
    write_results(run_dir)
    logger.finalize("success")
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    experiment = _mlflow(cfg).get_experiment_by_name(cfg.logger.mlflow.experiment_name)
    named = f"attributes.run_name = '{run_dir.name}'"
    assert experiment is None or not _mlflow(cfg).search_runs([experiment.experiment_id], named)
    assert not (run_dir / TRACKERS_FILE).exists()


def test_the_runs_last_finalize_uploads_its_checkpoint_and_config(run_dir: Path) -> None:
    cfg = compose_job(run_dir, "logger=mlflow")
    logger = built(cfg, "mlflow")
    best = run_dir / "checkpoints" / "epoch_003.ckpt"
    best.parent.mkdir()
    best.write_bytes(b"weights")
    logger.log_metrics({"val/acc": 0.5}, step=1)
    logger.finalize("success")  # Lightning's, after fit (and after test): the run goes on
    client = _mlflow(cfg)
    assert client.list_artifacts(logger.run_id) == []

    write_results(run_dir, str(best))
    finish_logging([logger], cfg, {"test/acc": 0.9}, step=4)  # the core's, at the run's end
    listed = {a.path for a in client.list_artifacts(logger.run_id)}
    assert listed == {".hydra", "checkpoints", "metrics.json"}
    assert [a.path for a in client.list_artifacts(logger.run_id, "checkpoints")] == [
        "checkpoints/epoch_003.ckpt"
    ]
    (run_dir / "got").mkdir()
    local = client.download_artifacts(logger.run_id, ".hydra/config.yaml", str(run_dir / "got"))
    assert OmegaConf.load(local).seed == 42
    assert _history(client, logger.run_id, "hp/test_acc") == [(4, 0.9)]
    assert client.get_run(logger.run_id).info.status == "FINISHED"


def test_a_finished_run_resumed_again_uploads_only_its_new_results(run_dir: Path) -> None:
    cfg = compose_job(run_dir, "logger=mlflow")
    first = built(cfg, "mlflow")
    first.log_metrics({"val/acc": 0.5}, step=1)
    write_results(run_dir)  # the first run's end

    ckpt = checkpoint_at(run_dir, 1)
    resumed = built(compose_job(run_dir, "logger=mlflow", f"ckpt_path={ckpt}"), "mlflow")
    resumed.log_metrics({"val/acc": 0.5}, step=1)
    resumed.finalize("success")  # after its fit: metrics.json is the first run's
    client = _mlflow(cfg)
    assert resumed.run_id == first.run_id and client.list_artifacts(resumed.run_id) == []
    write_results(run_dir)
    resumed.finalize("success")
    assert "metrics.json" in {a.path for a in client.list_artifacts(resumed.run_id)}


def test_a_wandb_run_is_named_grouped_and_tagged_from_hydras_runtime(run_dir: Path) -> None:
    sweep = run_dir / "train" / "multiruns" / "2026-12-05_06-00-00"
    cfg = compose_job(
        sweep / "3",
        "logger=wandb",
        "tags=[grid]",
        "logger.wandb.tags=[more]",
        sweep_dir=sweep,
        job=3,
        log_dir=run_dir,
    )
    logger = built(cfg, "wandb")
    assert isinstance(logger, TrackedWandbLogger)
    init = logger.init_arguments  # what wandb.init gets
    name = "train/multiruns/2026-12-05_06-00-00"
    assert init["name"] == f"{name}/3" and init["group"] == name
    assert init["tags"] == ["grid", "more"] and init["id"] is None
    assert init["dir"] == str(sweep / "3") and init["project"] == "mnist-lit"
    assert init["config"]["model._target_"] == cfg.model._target_
    assert init["config"]["tags"] == ["grid"]
    # offline: no resume (W&B ignores it, with a warning), and never anonymous (no effect)
    assert init["mode"] == "offline" and init["resume"] is None and "anonymous" not in init
    assert not (sweep / "3" / TRACKERS_FILE).exists()  # nothing before the run starts

    single = built(compose_job(run_dir / "single", "logger=wandb"), "wandb")
    assert single.init_arguments["name"] == "single" and single.init_arguments["group"] is None
    online = built(
        compose_job(run_dir / "on", "logger=wandb", "logger.wandb.offline=false"), "wandb"
    )
    assert online.init_arguments["resume"] == "allow" and online.init_arguments["mode"] is None


def test_a_resumed_wandb_run_goes_on_with_its_id_and_group(run_dir: Path) -> None:
    (run_dir).mkdir(parents=True)
    (run_dir / TRACKERS_FILE).write_text(json.dumps({"wandb": {"id": "abc123", "group": "g"}}))
    fresh = built(compose_job(run_dir, "logger=wandb"), "wandb")
    assert fresh.init_arguments["id"] is None  # not resuming: a new W&B run
    ckpt = checkpoint_at(run_dir, 5)
    resumed = built(compose_job(run_dir, "logger=wandb", f"ckpt_path={ckpt}"), "wandb")
    assert resumed.init_arguments["id"] == "abc123" and resumed.init_arguments["group"] == "g"
    assert resumed.logged_steps == {}  # no W&B files of it here


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


def test_tracker_values_are_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"did you mean 'logger\.mlflow\.experiment_name'"):
        precheck("train", ["logger=mlflow", "logger.mlflow.experimnt_name=x"])
    # a tracker checks its own arguments when the trainer is built: before any data or run
    run_dir = tmp_path / "logs" / "run"
    cfg = compose_config("train", ["logger=wandb", "logger.wandb.offline=yes"], run_dir)
    with pytest.raises(UserError, match=r"^logger\.wandb\.offline='yes' is invalid") as err:
        build_trainer(cfg)
    assert len(str(err.value).splitlines()) == 1 and err.value.exit_code == 2
    cfg = compose_config("train", ["logger=mlflow", "logger.mlflow.experiment_name="], run_dir)
    with pytest.raises(UserError, match=r"^logger\.mlflow\.experiment_name='' is invalid"):
        build_trainer(cfg)
    assert not (tmp_path / "logs" / "mlflow").exists()  # no store opened
    cfg = compose_config("train", ["logger=wandb", "+logger.wandb.notes=for wandb.init"], run_dir)
    (logger,) = build_trainer(cfg).loggers
    assert logger._wandb_init["notes"] == "for wandb.init"


@pytest.mark.parametrize(("logger", "package"), [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_a_tracker_that_is_not_installed_is_one_line(
    logger: str, package: str, run_dir: Path, monkeypatch
) -> None:
    cfg = compose_config("train", [f"logger={logger}"], run_dir)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a)
    )
    with pytest.raises(
        UserError, match=rf"needs {package}.*pip install -e '\.\[trackers\]'"
    ) as err:
        build_trainer(cfg)
    assert err.value.exit_code == 2 and len(str(err.value).splitlines()) == 1


@pytest.mark.slow  # SQLite waits for the lock (about 20 s) before it gives up
def test_a_damaged_or_locked_mlflow_store_is_one_line(tmp_path: Path) -> None:
    """A file that is not SQLite is refused (exit 2, move it away); a store another process
    holds locked fails in one line (exit 1, try again) instead of SQLAlchemy's traceback."""
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(b"not a database, " * 1000)
    with pytest.raises(UserError) as caught:
        TrackedMLFlowLogger(tracking_uri=f"sqlite:///{damaged}", run_dir=tmp_path / "run")
    assert caught.value.exit_code == 2 and "move the file away" in str(caught.value)

    store = tmp_path / "mlflow.db"
    uri = f"sqlite:///{store}"
    TrackedMLFlowLogger(tracking_uri=uri, run_dir=tmp_path / "first")  # creates the tables
    holder = sqlite3.connect(store, isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(UserError) as caught:
            TrackedMLFlowLogger(tracking_uri=uri, run_dir=tmp_path / "second").experiment  # noqa: B018
        assert caught.value.exit_code == 1 and "locked" in str(caught.value)
    finally:
        holder.close()
