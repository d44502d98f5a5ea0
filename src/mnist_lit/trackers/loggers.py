"""Loggers: built from ``conf/logger``, kept intact on resume, given each run's hyper-parameters.

TensorBoard and CSV write into the run dir. The experiment trackers keep their runs elsewhere
(MLflow in a store, ``logs/mlflow/mlflow.db`` by default; W&B offline in ``<run dir>/wandb``),
so the ids of a run's tracker runs are kept in ``<run dir>/trackers.json``: ``resume=`` goes on
with the same tracker runs. A sweep's jobs become child runs of one MLflow run per sweep dir
(and one W&B group). Everything here that writes runs on rank 0 only (Lightning's tracker
loggers log from rank 0 only). mlflow and wandb are imported only when a run uses them.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mnist_lit.compat import wandb_history_rows
from mnist_lit.config import plain_dict
from mnist_lit.errors import FAILED, UserError, atomic_write_bytes

#: the ids of this run's tracker runs (MLflow's run id, W&B's run id and group), by tracker
TRACKERS_FILE = "trackers.json"
#: in a sweep dir: the MLflow parent run that the sweep's jobs are children of
PARENT_RUN_FILE = "mlflow_parent_run.json"
#: the package each tracker's logger needs (the optional ``trackers`` dependencies)
TRACKER_PACKAGES = {"TrackedMLFlowLogger": "mlflow", "TrackedWandbLogger": "wandb"}
#: the longest MLflow param value (MLflow's limit)
MLFLOW_MAX_PARAM_LENGTH = 6000


@dataclass(frozen=True)
class TrackedRun:
    """What the trackers record about the run beside its metrics."""

    run_dir: Path
    #: the run dir's name, or ``<sweep dir name>/<job number>`` for a sweep's job
    name: str
    #: the sweep dir of a multirun's job (None for a single run, or a resumed job: its tracker
    #: runs already belong to their sweep)
    sweep_dir: Path | None = None
    tags: tuple[str, ...] = ()
    #: the step the run resumes at (None: a fresh run)
    resumed_at: int | None = None
    #: the composed config, flat (``model.dropout -> 0.25``)
    config: dict[str, Any] = field(default_factory=dict)

    def saved_ids(self, tracker: str) -> dict[str, Any]:
        """The ids ``remember_ids`` kept for ``tracker``: empty for a fresh run."""
        path = self.run_dir / TRACKERS_FILE
        if self.resumed_at is None or not path.is_file():
            return {}
        return dict(json.loads(path.read_text()).get(tracker, {}))

    def remember_ids(self, tracker: str, ids: dict[str, Any]) -> None:
        path = self.run_dir / TRACKERS_FILE
        saved = json.loads(path.read_text()) if path.is_file() else {}
        saved[tracker] = ids
        atomic_write_bytes(path, json.dumps(saved, indent=2).encode())


def tracked_run(cfg: DictConfig, resumed_at: int | None) -> TrackedRun:
    """The ``TrackedRun`` that ``cfg`` configures (Hydra's runtime says if it is a sweep's job)."""
    run_dir = Path(cfg.paths.output_dir)
    name, sweep_dir = run_dir.name, None
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep_dir = Path(HydraConfig.get().sweep.dir)
        name = f"{sweep_dir.name}/{HydraConfig.get().job.num}"
    config = {k: v for k, v in cfg.items() if k != "hydra"}
    return TrackedRun(
        run_dir=run_dir,
        name=name,
        sweep_dir=sweep_dir,
        tags=tuple(run_tags(cfg)),
        resumed_at=resumed_at,
        config=flat_params(OmegaConf.to_container(OmegaConf.create(config), resolve=True)),
    )


def run_tags(cfg: DictConfig) -> list[str]:
    """The run's ``tags=[...]`` (or ``tags=<one tag>``) as a list."""
    tags = cfg.get("tags") or []
    return [tags] if isinstance(tags, str) else [str(tag) for tag in tags]


def flat_params(node: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"model": {"dropout": 0.25}}`` -> ``{"model.dropout": 0.25}``; lists stay whole."""
    if not isinstance(node, Mapping):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flat_params(value, name, sep))
        else:
            flat[name] = value
    return flat


def build_loggers(cfg: DictConfig, resumed_at: int | None) -> list[Logger]:
    """The loggers the config names (``null`` ones dropped); ``resumed_at``: the resumed step."""
    chosen = [lg for lg in (cfg.get("logger") or {}).values() if lg]
    if not chosen:
        return []
    run = tracked_run(cfg, resumed_at)
    return [build_logger(lg, resumed_at, run) for lg in chosen]


def build_logger(
    logger_cfg: DictConfig, resumed_at: int | None, run: TrackedRun | None = None
) -> Logger:
    """A logger; when resuming, one that keeps what the stopped run logged.

    TensorBoard hides what the stopped run logged after its checkpoint (those steps are trained
    and logged again; ``purge_step`` keeps one copy of each). ``CSVLogger`` deletes the
    ``metrics.csv`` it finds, so a resumed run writes its own beside it, in
    ``csv/resumed_at_step_<N>/``. MLflow and W&B go on with the stopped run's tracker run and
    skip the steps it logged already (trackers cannot delete them).
    """
    target = str(logger_cfg._target_)
    for tracked, package in TRACKER_PACKAGES.items():
        if target == f"{__name__}.{tracked}" and importlib.util.find_spec(package) is None:
            raise UserError(
                f"this logger needs {package}, which is not installed: "
                "pip install -e '.[trackers]' (mlflow and wandb), or choose another logger="
            )
    if resumed_at is not None and target.endswith("TensorBoardLogger"):
        return instantiate(logger_cfg, purge_step=resumed_at)
    if resumed_at is not None and target.endswith("CSVLogger"):
        version = f"{logger_cfg.get('version') or ''}/resumed_at_step_{resumed_at:07d}"
        return instantiate(logger_cfg, version=version.lstrip("/"))
    # (given to the class as they are: instantiate would make the run's dataclass a config)
    if run is not None and target == f"{__name__}.{TrackedMLFlowLogger.__name__}":
        build = instantiate(logger_cfg, _partial_=True)
        return build(run=run, run_name=logger_cfg.get("run_name") or run.name)
    if run is not None and target == f"{__name__}.{TrackedWandbLogger.__name__}":
        return instantiate(logger_cfg, _partial_=True)(**_wandb_arguments(logger_cfg, run))
    return instantiate(logger_cfg)


# ----------------------------------------------------------------------------- MLflow


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Around the first calls to a SQLite store: parallel jobs would create its tables at once."""
    if not tracking_uri.startswith("sqlite:///"):
        with nullcontext():
            yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its folder
    with FileLock(db.with_name(db.name + ".lock")):
        yield


class TrackedMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` for a ``TrackedRun``: its run is created on first use with
    the run's tags and config as params, as a child of its sweep's parent run; a resumed run
    goes on with the stopped run's MLflow run, and its params are never changed (MLflow refuses
    that: a value given anew on resume is kept as a ``resume.changed.<key>`` tag instead).
    """

    def __init__(
        self,
        experiment_name: str = "lightning_logs",
        tracking_uri: str | None = None,
        artifact_location: str | None = None,
        run: TrackedRun | None = None,
        **kwargs: Any,
    ) -> None:
        self.tracked = run
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location
        saved = run.saved_ids("mlflow") if run else {}
        if saved.get("run_id"):
            kwargs["run_id"] = saved["run_id"]
        self.resumes_run = bool(saved.get("run_id"))
        with _store_lock(self._tracking_uri_or_default()):  # its client may open the store
            super().__init__(
                experiment_name=experiment_name,
                tracking_uri=tracking_uri,
                artifact_location=artifact_location,
                **kwargs,
            )
        self._started = False
        #: on resume: the last step each metric was logged at by the stopped run
        self.logged_steps: dict[str, int] = {}
        self.parent_run_id: str | None = None

    @property
    def experiment(self) -> Any:
        """The ``MlflowClient``; its first use on rank 0 creates or reopens the MLflow run."""
        if self._started or rank_zero_only.rank != 0:  # type: ignore[attr-defined]
            return super().experiment
        self._started = True
        from mlflow.exceptions import MlflowException

        uri = self._tracking_uri_or_default()
        try:
            with _store_lock(uri):
                if self.tracked is not None and not self.resumes_run:
                    self.tags = self._new_run_tags()
                client = super().experiment  # creates the run, or finds the stopped one
            if self.tracked is not None:
                self._start_tracked_run(client)
        except MlflowException as err:
            reason = str(err).strip().splitlines()[0]
            raise UserError(
                f"logger.mlflow: the MLflow store {uri} failed ({reason}): check "
                "logger.mlflow.tracking_uri (a resumed run needs the store that holds its run)",
                exit_code=FAILED,
            ) from None
        return client

    def _tracking_uri_or_default(self) -> str:
        import mlflow

        return str(self.tracking_uri or mlflow.get_tracking_uri())

    def _new_run_tags(self) -> dict[str, Any]:
        """The run's tags, and its sweep's parent run (the experiment made first if new)."""
        from mlflow import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        assert self.tracked is not None
        client = MlflowClient(self.tracking_uri)
        found = client.get_experiment_by_name(self.experiment_name)
        experiment_id = (
            found.experiment_id
            if found is not None
            else client.create_experiment(
                self.experiment_name, artifact_location=self.artifact_location
            )
        )
        tags = {tag: "" for tag in self.tracked.tags} | dict(self.tags or {})
        if self.tracked.sweep_dir is not None:
            self.parent_run_id = sweep_parent_run(
                client, experiment_id, self.tracked.sweep_dir, self.tracked
            )
            tags[MLFLOW_PARENT_RUN_ID] = self.parent_run_id
        return tags

    def _start_tracked_run(self, client: Any) -> None:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        assert self.tracked is not None and self.run_id is not None
        run = client.get_run(self.run_id)
        self.parent_run_id = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
        if self.tracked.resumed_at is not None:
            client.update_run(self.run_id, status="RUNNING")
            self.logged_steps = logged_steps(client, self.run_id)
        if self.parent_run_id is not None:
            client.update_run(self.parent_run_id, status="RUNNING")
        self.tracked.remember_ids(
            "mlflow",
            {
                "run_id": self.run_id,
                "experiment_id": self.experiment_id,
                "tracking_uri": self._tracking_uri_or_default(),
            },
        )
        self.log_hyperparams(self.tracked.config)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        """Params as MLflow keeps them: new keys logged, a changed value kept as a tag."""
        from mlflow.entities import Param, RunTag

        flat = flat_params(dict(vars(params) if not isinstance(params, Mapping) else params))
        given = {k: str(v)[:MLFLOW_MAX_PARAM_LENGTH] for k, v in flat.items()}
        logged = self.experiment.get_run(self.run_id).data.params
        new = [Param(k, v) for k, v in given.items() if k not in logged]
        changed = [
            RunTag(f"resume.changed.{k}", f"{logged[k]} -> {v}")
            for k, v in given.items()
            if k in logged and logged[k] != v
        ]
        for start in range(0, max(len(new), 1), 100):  # MLflow takes 100 params per call
            batch = new[start : start + 100]
            self.experiment.log_batch(self.run_id, params=batch, tags=changed if not start else [])

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        _ = self.experiment  # a resumed run reads what the stopped run logged when it starts
        super().log_metrics(_not_logged_yet(metrics, step, self.logged_steps), step)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        super().finalize(status)
        if self.parent_run_id is not None and status in ("success", "finished"):
            # a sweep's parent ends with the last job that ends
            self.experiment.set_terminated(self.parent_run_id, "FINISHED")


def logged_steps(client: Any, run_id: str) -> dict[str, int]:
    """The last step each metric of an MLflow run was logged at, read back from the store."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def _not_logged_yet(
    metrics: Mapping[str, float], step: int | None, logged: Mapping[str, int]
) -> dict[str, float]:
    """On resume: the metrics of ``step`` that the stopped run did not log (the same values,
    since the resumed run repeats its steps exactly)."""
    if step is None:
        return dict(metrics)
    return {k: v for k, v in metrics.items() if step > logged.get(k, -1)}


def sweep_parent_run(client: Any, experiment_id: str, sweep_dir: Path, run: TrackedRun) -> str:
    """The MLflow run that a sweep's jobs are children of, created by the first job to ask.

    Its id is kept in the sweep dir, under a file lock: parallel jobs (other processes, other
    nodes sharing the dir) all find the one run.
    """
    path = sweep_dir / PARENT_RUN_FILE
    with FileLock(sweep_dir / f".{PARENT_RUN_FILE}.lock"):
        if path.is_file():
            return str(json.loads(path.read_text())["run_id"])
        tags = {tag: "" for tag in run.tags} | {"sweep_dir": str(sweep_dir)}
        parent = client.create_run(experiment_id, run_name=sweep_dir.name, tags=tags)
        atomic_write_bytes(path, json.dumps({"run_id": parent.info.run_id}).encode())
        return str(parent.info.run_id)


# ----------------------------------------------------------------------------- W&B


def _wandb_arguments(logger_cfg: DictConfig, run: TrackedRun) -> dict[str, Any]:
    """The id, name, group, tags and config of this run's W&B run; a resumed run's saved ones."""
    saved = run.saved_ids("wandb")
    if saved.get("id"):
        run_id, group = saved["id"], saved.get("group")
    else:  # W&B picks the id
        run_id = None
        group = logger_cfg.get("group") or (run.sweep_dir.name if run.sweep_dir else None)
    return {
        "run": run,
        "id": run_id,
        "name": logger_cfg.get("name") or run.name,
        "group": group,
        "tags": [*run.tags, *(logger_cfg.get("tags") or [])],
        "config": run.config,
    }


class TrackedWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` for a ``TrackedRun``: a resumed run goes on with the stopped
    run's W&B run (same id and group) and skips the steps that W&B's files of it hold."""

    def __init__(
        self,
        id: str | None = None,
        group: str | None = None,
        run: TrackedRun | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(id=id, group=group, **kwargs)
        self.tracked, self.group = run, group
        self.logged_steps: dict[str, int] = {}
        if id is not None and run is not None and run.resumed_at is not None:
            self.logged_steps = wandb_logged_steps(Path(kwargs.get("save_dir") or "."), id)
        self._started = False

    @property
    def experiment(self) -> Any:
        """W&B's run; the first use on rank 0 starts it and keeps its id in the run dir."""
        started = super().experiment
        if not self._started and rank_zero_only.rank == 0 and self.tracked is not None:  # type: ignore[attr-defined]
            self._started = True
            self.tracked.remember_ids("wandb", {"id": started.id, "group": self.group})
        return started

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        new = _not_logged_yet(metrics, step, self.logged_steps)
        if new:
            super().log_metrics(new, step)


def wandb_logged_steps(save_dir: Path, run_id: str) -> dict[str, int]:
    """The last step each metric was logged at in W&B's files of run ``run_id`` under
    ``save_dir/wandb`` (offline, or online: both keep one), read with W&B's own reader.

    Why the files: W&B's service writes them in blocks, so a run that was killed (SIGKILL) holds
    less there than it logged; what is there is what W&B has (``compat.wandb_history_rows``).
    """
    steps: dict[str, int] = {}
    for path in sorted((save_dir / "wandb").glob(f"*-{run_id}/run-{run_id}.wandb")):
        for row in wandb_history_rows(path):
            step = json.loads(row.pop("trainer/global_step", "null"))
            for key in row:
                if step is not None and not key.startswith("_"):
                    steps[key] = max(step, steps.get(key, -1))
    return steps


# ----------------------------------------------------------------------------- the end of a run


#: final metrics shown beside the hyper-parameters in TensorBoard's HPARAMS tab
HPARAM_METRICS = ("val/acc_best", "val/loss", "train/acc", "train/loss", "test/acc", "test/loss")


def hparams_for_logging(cfg: DictConfig) -> dict[str, Any]:
    """Flat ``group/key -> value`` of what defines a run, for TensorBoard's HPARAMS tab."""
    params: dict[str, Any] = {"seed": cfg.seed, "trainer/max_epochs": cfg.trainer.get("max_epochs")}
    if tags := run_tags(cfg):
        params["tags"] = ", ".join(tags)
    if HydraConfig.initialized():
        for group, choice in HydraConfig.get().runtime.choices.items():
            if group in ("model", "optimizer", "scheduler", "trainer") and choice is not None:
                params[f"{group}/choice"] = choice
    for group in ("model", "optimizer", "scheduler", "data"):
        node = plain_dict(cfg[group]) if cfg.get(group) else {}
        for key, value in node.items():
            if key not in ("_partial_", "data_dir"):
                scalar = isinstance(value, (int, float, str, bool))
                params[f"{group}/{key}"] = value if scalar else str(value)
    return params


def log_hparams(
    loggers: list[Logger], cfg: DictConfig, metrics: dict[str, float], step: int | None = None
) -> None:
    """One HPARAMS entry per run with its final metrics (under ``hp/`` so they sort together).

    The trackers got the whole config when their run started; they get the final metrics at
    ``step`` (the run's last), so a resumed run that measures them again logs them once.
    """
    final = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items() if k in HPARAM_METRICS}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams_for_logging(cfg), metrics=final)
        elif isinstance(logger, (TrackedMLFlowLogger, TrackedWandbLogger)):
            logger.log_metrics(final, step=step)
        else:
            logger.log_hyperparams(hparams_for_logging(cfg))
            logger.log_metrics(final, step=step)
        logger.save()


def finish_tracking(loggers: list[Logger], run_dir: Path, best_ckpt: str) -> None:
    """At the end of a run (rank 0): MLflow gets the best checkpoint, the config tree
    (``.hydra/``, ``config_tree.txt``) and ``metrics.json`` as artifacts; W&B's run is finished,
    so that the next job of a sweep in this process starts its own."""
    for logger in loggers:
        if isinstance(logger, MLFlowLogger) and logger.run_id is not None:
            client, run_id = logger.experiment, logger.run_id
            if best_ckpt:
                client.log_artifact(run_id, best_ckpt, "checkpoints")
            for name in ("config_tree.txt", "metrics.json"):
                if (run_dir / name).is_file():
                    client.log_artifact(run_id, str(run_dir / name))
            for path in sorted((run_dir / ".hydra").glob("*.yaml")):
                client.log_artifact(run_id, str(path), ".hydra")
    if any(isinstance(logger, WandbLogger) for logger in loggers):
        import wandb

        if wandb.run is not None:
            wandb.finish()
