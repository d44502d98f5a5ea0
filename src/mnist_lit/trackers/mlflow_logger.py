"""``logger=mlflow``: Lightning's ``MLFlowLogger`` that keeps one MLflow run per run dir.

The run's MLflow run id is kept in ``<run dir>/trackers.json``, so ``resume=`` goes on with the
same MLflow run; a sweep's jobs are child runs of one parent run per sweep dir. Everything that
writes runs on rank 0 only. mlflow is imported only once a logger is built.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from filelock import FileLock
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only
from pydantic import Field

from mnist_lit.cli import best_checkpoint
from mnist_lit.errors import FAILED, UserError, atomic_write_bytes, first_line, require_extra
from mnist_lit.schema import Options
from mnist_lit.trackers.run import (
    TrackedRun,
    check_arguments,
    flat_params,
    not_logged_yet,
    tracked_run,
)

#: in a sweep dir: the MLflow parent run that the sweep's jobs are children of
PARENT_RUN_FILE = "mlflow_parent_run.json"
#: the longest MLflow param value (MLflow's limit)
MLFLOW_MAX_PARAM_LENGTH = 6000


class MLflowArguments(Options):
    """``conf/logger/mlflow.yaml``: what MLflow would refuse only once the run has trained."""

    experiment_name: Annotated[str, Field(min_length=1, max_length=500)]
    run_name: str | None = None
    tracking_uri: str | None = None
    artifact_location: str | None = None
    tags: dict[str, str] | None = None
    log_model: bool | Literal["all"] = False
    prefix: str = ""
    run_dir: str
    log_dir: str | None = None
    ckpt_path: str | None = None


#: the experiment tag that picks the MLflow UI's view of an experiment
EXPERIMENT_KIND = "mlflow.experimentKind"
#: params that resume= itself changes (not the user): no ``resume.changed.<key>`` tag for them
SET_BY_RESUME = ("ckpt_path",)


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Around the first calls to a SQLite store: parallel jobs would create its tables at once."""
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)  # SQLite makes the file, not its folder
    with FileLock(db.with_name(db.name + ".lock")):
        yield


@contextmanager
def _store_errors(tracking_uri: str) -> Iterator[None]:
    """A store MLflow cannot open or write as one line: a damaged or locked SQLite file, or a
    server that fails (MLflow and SQLAlchemy raise them from deep inside, over 100 lines)."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, SQLAlchemyError) as err:
        reason = first_line(err).removeprefix("(sqlite3.OperationalError) ")
        if "database is locked" in reason:
            raise UserError(
                f"logger.mlflow: the MLflow store {tracking_uri} is locked by another process "
                "(a long query of `mlflow ui`, a stuck run): try again once it is done, or pass "
                "logger.mlflow.tracking_uri=sqlite:///<another file>.db",
                exit_code=FAILED,
            ) from None
        if isinstance(err, SQLAlchemyError):
            raise UserError(
                f"logger.mlflow: the MLflow store {tracking_uri} cannot be read ({reason}): move "
                "the file away to start a new store, or pass "
                "logger.mlflow.tracking_uri=sqlite:///<another file>.db"
            ) from None
        raise UserError(
            f"logger.mlflow: the MLflow store {tracking_uri} failed ({reason}): check "
            "logger.mlflow.tracking_uri (a resumed run needs the store that holds its run)",
            exit_code=FAILED,
        ) from None


class TrackedMLFlowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` for one run dir: its run is created on first use with the
    run's tags and composed config as params, as a child of its sweep's parent run; a resumed
    run goes on with the stopped run's MLflow run, and its params are never changed (MLflow
    refuses that: a value given anew on resume is kept as a ``resume.changed.<key>`` tag).
    The run's last finalize uploads the best checkpoint, the config and ``metrics.json``.

    ``run_dir``, ``log_dir``, ``run_tags`` and ``ckpt_path``: the run's dir, ``paths.log_dir``
    (the run is named by where it is in it), its ``tags`` and the checkpoint it resumes from
    (``conf/logger/mlflow.yaml`` interpolates them).
    """

    def __init__(
        self,
        experiment_name: str = "mnist-lit",
        run_name: str | None = None,
        tracking_uri: str | None = None,
        artifact_location: str | None = None,
        run_dir: str | Path = ".",
        log_dir: str | Path | None = None,
        run_tags: Any = None,
        ckpt_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        require_extra("trackers", "mlflow")
        given = {
            "experiment_name": experiment_name,
            "run_name": run_name,
            "tracking_uri": tracking_uri,
            "artifact_location": artifact_location,
            "run_dir": str(run_dir),
            "log_dir": None if log_dir is None else str(log_dir),
            "ckpt_path": ckpt_path,
            **kwargs,
        }
        check_arguments("logger.mlflow", MLflowArguments, given)
        self.tracked: TrackedRun = tracked_run(run_dir, run_tags, ckpt_path, log_dir)
        self.experiment_name = experiment_name
        self.tracking_uri = tracking_uri
        self.artifact_location = artifact_location
        saved = self.tracked.saved_ids("mlflow")
        if saved.get("run_id"):
            kwargs["run_id"] = saved["run_id"]
        self.resumes_run = bool(saved.get("run_id"))
        if kwargs.get("tags") is not None:
            kwargs["tags"] = {str(k): str(v) for k, v in kwargs["tags"].items()}
        uri = self._tracking_uri_or_default()
        with _store_errors(uri), _store_lock(uri):  # its client may open the store
            super().__init__(
                experiment_name=experiment_name,
                run_name=run_name or self.tracked.name,
                tracking_uri=tracking_uri,
                artifact_location=artifact_location,
                **kwargs,
            )
        self._started = False
        self._uploaded = False
        #: on resume: the last step each metric was logged at by the stopped run
        self.logged_steps: dict[str, int] = {}
        self.parent_run_id: str | None = None

    @property
    def experiment(self) -> Any:
        """The ``MlflowClient``; its first use on rank 0 creates or reopens the MLflow run."""
        if self._started or rank_zero_only.rank != 0:  # type: ignore[attr-defined]
            return super().experiment
        self._started = True
        uri = self._tracking_uri_or_default()
        with _store_errors(uri):
            with _store_lock(uri):
                if not self.resumes_run:
                    self.tags = self._new_run_tags()
                client = super().experiment  # creates the run, or finds the stopped one
            self._start_tracked_run(client)
        return client

    def _tracking_uri_or_default(self) -> str:
        import mlflow

        return str(self.tracking_uri or mlflow.get_tracking_uri())

    def _new_run_tags(self) -> dict[str, Any]:
        """The run's tags, and its sweep's parent run (the experiment made first if new)."""
        from mlflow import MlflowClient
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

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
                client,
                experiment_id,
                self.tracked.sweep_dir,
                self.tracked,
                self._tracking_uri_or_default(),
            )
            tags[MLFLOW_PARENT_RUN_ID] = self.parent_run_id
        return tags

    def _start_tracked_run(self, client: Any) -> None:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        assert self.run_id is not None
        run = client.get_run(self.run_id)
        self.parent_run_id = run.data.tags.get(MLFLOW_PARENT_RUN_ID)
        if self.tracked.resumed_at is not None:
            client.update_run(self.run_id, status="RUNNING")
            self.logged_steps = logged_steps(client, self.run_id)
        if self.parent_run_id is not None:
            client.update_run(self.parent_run_id, status="RUNNING")
        experiment = client.get_experiment(self.experiment_id)
        if EXPERIMENT_KIND not in experiment.tags:  # a kind set by hand stays
            # MLflow 3 opens an experiment without a kind in its GenAI view (traces)
            client.set_experiment_tag(
                self.experiment_id, EXPERIMENT_KIND, "custom_model_development"
            )
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
        with _store_errors(self._tracking_uri_or_default()):
            logged = self.experiment.get_run(self.run_id).data.params
            new = [Param(k, v) for k, v in given.items() if k not in logged]
            changed = [
                RunTag(f"resume.changed.{k}", f"{logged[k]} -> {v}")
                for k, v in given.items()
                if k in logged and logged[k] != v and k not in SET_BY_RESUME
            ]
            for start in range(0, max(len(new), 1), 100):  # MLflow takes 100 params per call
                batch = new[start : start + 100]
                self.experiment.log_batch(
                    self.run_id, params=batch, tags=changed if not start else []
                )

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        _ = self.experiment  # a resumed run reads what the stopped run logged when it starts
        new = not_logged_yet(metrics, step, self.logged_steps)
        if step is not None:  # Lightning sends `epoch` with the train and the val metrics of a step
            self.logged_steps.update(dict.fromkeys(new, step))
        with _store_errors(self._tracking_uri_or_default()):
            super().log_metrics(new, step)

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        """End the run; at the run's end (``metrics.json`` written) upload its files first."""
        if not self._initialized:  # never started: no MLflow run to end
            return
        results = self.tracked.new_results() if status == "success" else None
        with _store_errors(self._tracking_uri_or_default()):
            if results is not None and not self._uploaded:
                self._uploaded = True
                upload_artifacts(self.experiment, str(self.run_id), self.tracked.run_dir)
            super().finalize(status)
            if self.parent_run_id is not None and status in ("success", "finished"):
                # a sweep's parent ends with the last job that ends
                self.experiment.set_terminated(self.parent_run_id, "FINISHED")


def upload_artifacts(client: Any, run_id: str, run_dir: Path) -> None:
    """The best checkpoint (``checkpoints/``), ``config_tree.txt``, ``metrics.json`` and the
    config Hydra saved (``.hydra/``) as the MLflow run's artifacts."""
    if best := best_checkpoint(run_dir):
        client.log_artifact(run_id, str(best), "checkpoints")
    for name in ("config_tree.txt", "metrics.json"):
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    for path in sorted((run_dir / ".hydra").glob("*.yaml")):
        client.log_artifact(run_id, str(path), ".hydra")


def logged_steps(client: Any, run_id: str) -> dict[str, int]:
    """The last step each metric of an MLflow run was logged at, read back from the store."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def sweep_parent_run(
    client: Any, experiment_id: str, sweep_dir: Path, run: TrackedRun, tracking_uri: str
) -> str:
    """The MLflow run that a sweep's jobs are children of, created by the first job to ask.

    Its id is kept in the sweep dir, under a file lock: parallel jobs (other processes, other
    nodes sharing the dir) all find the one run.
    """
    path = sweep_dir / PARENT_RUN_FILE
    with FileLock(sweep_dir / f".{PARENT_RUN_FILE}.lock"):
        if path.is_file():
            return str(json.loads(path.read_text())["run_id"])
        tags = {tag: "" for tag in run.tags} | {"sweep_dir": str(sweep_dir)}
        parent = client.create_run(experiment_id, run_name=run.sweep_name, tags=tags)
        record = {"run_id": parent.info.run_id, "tracking_uri": tracking_uri}
        atomic_write_bytes(path, json.dumps(record).encode())
        return str(parent.info.run_id)


#: what of a sweep dir its parent run keeps as artifacts (sweeps/report.py writes them)
SWEEP_ARTIFACTS = ("report.md", "report.csv", "*.png", "optimization_results.yaml")


def finish_sweep_parent(sweep_dir: Path) -> str | None:
    """Give a sweep's parent MLflow run what the sweep found, once its report is written: the
    report's files as artifacts, the params every job shared, and the best job's metrics as
    ``best/<metric>`` with its run id and dir as tags (best by each job's ``optimized_metric``,
    lowest for a loss). None when the sweep logged to no MLflow run."""
    from mlflow import MlflowClient
    from mlflow.entities import Param
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    try:
        record = json.loads((sweep_dir / PARENT_RUN_FILE).read_text())
        parent_id, uri = str(record["run_id"]), str(record["tracking_uri"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no MLflow parent, or one written before the URI was kept
    with _store_errors(uri):
        client = MlflowClient(uri)
        parent = client.get_run(parent_id)
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent_id}'"
        )
        if children:
            shared = dict(children[0].data.params)
            for child in children[1:]:
                shared = {k: v for k, v in shared.items() if child.data.params.get(k) == v}
            new = [Param(k, v) for k, v in shared.items() if k not in parent.data.params]
            for start in range(0, len(new), 100):  # MLflow takes 100 params per call
                client.log_batch(parent_id, params=new[start : start + 100])
            metric = children[0].data.params.get("optimized_metric", "val/acc_best")
            scored = [c for c in children if metric in c.data.metrics]
            if scored:
                lowest = "loss" in metric
                pick = min if lowest else max
                best = pick(scored, key=lambda c: c.data.metrics[metric])
                for key, value in best.data.metrics.items():
                    client.log_metric(parent_id, f"best/{key}", value)
                client.set_tag(parent_id, "best_run_id", best.info.run_id)
                client.set_tag(parent_id, "best_run_name", best.info.run_name)
        for pattern in SWEEP_ARTIFACTS:
            for path in sorted(sweep_dir.glob(pattern)):
                client.log_artifact(parent_id, str(path), "sweep")
    return parent_id
