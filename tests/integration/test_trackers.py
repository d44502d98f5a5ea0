"""Experiment trackers through the real command line, read back through their own clients:
``MlflowClient`` on the SQLite store, and wandb's own reader of its offline run files.

A run, a run SIGKILLed and resumed (every tracker goes on with its run, no step twice), and a
2x2 multirun with ``logger=many`` (one MLflow parent run, a child per job; one W&B group).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from wandb.proto import wandb_internal_pb2
from wandb.sdk.internal import datastore

from mnist_lit.config import PROJECT_ROOT
from mnist_lit.trackers import TRACKERS_FILE

from ..conftest import QUICK, run_cli
from .conftest import RESUMABLE_RUN, kill_after

RUN = [*RESUMABLE_RUN, "logger=[many,wandb]", "tags=[tracked,resume-test]"]
#: the step of the checkpoint the killed run resumes from
RESUMED_AT = 6
#: what a resumed run measures anew (its own start-up) instead of repeating
MEASURED_ANEW = {"time/startup_seconds"}


@pytest.fixture(autouse=True)
def _quiet_offline_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def mlflow_client(log_dir: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{log_dir}/mlflow/mlflow.db")


def tracker_ids(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / TRACKERS_FILE).read_text())


def mlflow_histories(client: MlflowClient, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = client.get_run(run_id).data.metrics
    return {
        key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        for key in keys
    }


def wandb_records(run_dir: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of the run's offline W&B files, oldest file first (a resume adds one)."""
    records = []
    for path in sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb")):
        store = datastore.DataStore()
        store.open_for_scan(str(path))
        while (data := store.scan_data()) is not None:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(data)
            records.append(record)
    return records


def wandb_histories(records: list[wandb_internal_pb2.Record]) -> dict[str, list[tuple[int, float]]]:
    """``metric -> [(trainer/global_step, value)]`` from the history records."""
    found: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        if record.WhichOneof("record_type") != "history":
            continue
        row = {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in record.history.item
        }
        step = row.pop("trainer/global_step", None)
        for key, value in row.items():
            if not key.startswith("_") and step is not None:
                found.setdefault(key, []).append((step, value))
    return {key: sorted(values) for key, values in found.items()}


def _step_counts(histories: dict[str, list[tuple[int, float]]]) -> Counter:
    """How many times each (metric, step) was logged, but for what a resumed run measures anew."""
    return Counter(
        (k, step) for k, values in histories.items() if k not in MEASURED_ANEW for step, _ in values
    )


def wandb_runs(records: list[wandb_internal_pb2.Record]) -> list[Any]:
    return [r.run for r in records if r.WhichOneof("record_type") == "run"]


def _metrics(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "metrics.json").read_text())


def _start(run_dir: Path, log_dir: Path, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "train.py"), *RUN, f"paths.data_dir={data_dir}",
         f"paths.log_dir={log_dir}", f"hydra.run.dir={run_dir}"],
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "WANDB_SILENT": "true"},
    )  # fmt: skip


@pytest.mark.slow
def test_a_run_and_its_resume_in_every_tracker(tmp_path: Path, mnist_data_dir: Path) -> None:
    logs = tmp_path / "logs"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    paths = [f"paths.data_dir={mnist_data_dir}", f"paths.log_dir={logs}"]
    done = run_cli("train.py", *RUN, *paths, f"hydra.run.dir={straight}")
    assert done.returncode == 0, done.stderr[-3000:]

    # a run: config as params, tags, per-epoch and test metrics, checkpoint and config
    client = mlflow_client(logs)
    summary = _metrics(straight)
    assert summary["tags"] == ["tracked", "resume-test"]
    run = client.get_run(tracker_ids(straight)["mlflow"]["run_id"])
    # named by where it is: outside paths.log_dir, its whole path
    assert run.info.status == "FINISHED" and run.info.run_name == str(straight)
    assert {"tracked": "", "resume-test": ""}.items() <= run.data.tags.items()
    assert run.data.params["model._target_"] == "mnist_lit.models.mlp.MLP"
    assert run.data.params["trainer.max_epochs"] == "2"
    history = mlflow_histories(client, run.info.run_id)
    assert [step for step, _ in history["val/acc"]] == [7, 15]  # one per epoch
    assert history["test/acc"] == [(16, summary["metrics"]["test/acc"])]
    best = Path(summary["best_ckpt"]).name
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", ".hydra", "metrics.json", "config_tree.txt"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")] == [
        f"checkpoints/{best}"
    ]
    assert ".hydra/config.yaml" in {
        a.path for a in client.list_artifacts(run.info.run_id, ".hydra")
    }
    records = wandb_records(straight)
    (wandb_run,) = wandb_runs(records)
    assert wandb_run.run_id == tracker_ids(straight)["wandb"]["id"]
    assert list(wandb_run.tags) == ["tracked", "resume-test"]
    assert wandb_run.display_name == str(straight) and not wandb_run.run_group
    straight_wandb = wandb_histories(records)
    assert straight_wandb["test/acc"] == [(16, pytest.approx(summary["metrics"]["test/acc"]))]

    # killed after its step-6 checkpoint, resumed: the same tracker runs, each step once
    process = _start(killed, logs, mnist_data_dir)
    kill_after(
        process, killed / "checkpoints" / "resume" / f"step_{RESUMED_AT:07d}.ckpt", timeout=300
    )
    before = tracker_ids(killed)
    resumed = run_cli("train.py", f"resume={killed}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tracker_ids(killed) == before

    run_id = before["mlflow"]["run_id"]
    assert client.get_run(run_id).info.status == "FINISHED"
    want = {k: v for k, v in history.items() if k not in MEASURED_ANEW}
    got = {k: v for k, v in mlflow_histories(client, run_id).items() if k not in MEASURED_ANEW}
    assert got == want  # every metric, step and value, as if never killed
    records = wandb_records(killed)
    assert {r.run_id for r in wandb_runs(records)} == {before["wandb"]["id"]}
    resumed_wandb = wandb_histories(records)
    assert _step_counts(resumed_wandb) <= _step_counts(straight_wandb)  # no step twice
    for key in straight_wandb.keys() - MEASURED_ANEW:
        # W&B's service writes its file in blocks: what the killed part logged before its
        # checkpoint may be lost with it; from the checkpoint on, every step is there
        want = [(step, value) for step, value in straight_wandb[key] if step >= RESUMED_AT]
        got = resumed_wandb[key]
        assert [v for v in got if v[0] >= RESUMED_AT] == want, key
        assert set(got) <= set(straight_wandb[key]), key


@pytest.mark.slow
def test_a_2x2_multirun_is_one_parent_run_with_a_child_per_job(
    tmp_path: Path, mnist_data_dir: Path
) -> None:
    quick = [o for o in QUICK if "progress" not in o]
    result = run_cli(
        "train.py",
        "-m",
        "hydra/launcher=parallel",
        "model=mlp,cnn",
        "optimizer=adam,sgd",
        "logger=[many,wandb]",
        "tags=[grid]",
        "callbacks.sample_batch=null",
        "callbacks.test_images=null",
        *quick,
        f"paths.data_dir={mnist_data_dir}",
        f"paths.log_dir={tmp_path}",
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert len(jobs) == 4

    client = mlflow_client(tmp_path)
    (experiment,) = [e for e in client.search_experiments() if e.name == "mnist-lit"]
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    name = f"train/multiruns/{sweep.name}"  # where the sweep is in paths.log_dir
    assert parent.info.run_name == name and parent.info.status == "FINISHED"
    children = {r.info.run_id: r for r in runs if r is not parent}
    assert len(children) == 4
    # the sweep's report and best job, given to the parent when the multirun ended
    assert "sweep/report.md" in {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert parent.data.tags["best_run_id"] in children
    assert parent.data.params["tags"] == "['grid']"  # shared by every job
    for job in jobs:
        child = children[tracker_ids(job)["mlflow"]["run_id"]]
        assert child.data.tags[MLFLOW_PARENT_RUN_ID] == parent.info.run_id
        assert child.info.run_name == f"{name}/{job.name}"
        assert child.data.tags["grid"] == "" and child.info.status == "FINISHED"
        overrides = dict(
            o.split("=", 1) for o in yaml.safe_load((job / ".hydra/overrides.yaml").read_text())
        )
        model, optimizer = overrides["model"], overrides["optimizer"]
        assert child.data.params["model._target_"] == f"mnist_lit.models.{model}.{model.upper()}"
        assert child.data.params["optimizer._target_"].lower() == f"torch.optim.{optimizer}"
        assert child.data.metrics["test/acc"] == _metrics(job)["metrics"]["test/acc"]
        # logger=many: TensorBoard and CSV beside it
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))
        assert "test/acc" in (job / "csv" / "metrics.csv").read_text().splitlines()[0]
        (wandb_run,) = wandb_runs(wandb_records(job))
        assert wandb_run.run_group == name
        assert wandb_run.display_name == f"{name}/{job.name}"


@pytest.mark.slow
def test_an_offline_wandb_run_and_its_resume_print_no_warnings(
    tmp_path: Path, mnist_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning gives ``wandb.init`` ``anonymous`` and ``resume`` on every run, and W&B warns
    about both offline; the logger starts the run without them. ``resume=`` still goes on with
    the same W&B run, named by where the run dir is in ``paths.log_dir``."""
    monkeypatch.delenv("WANDB_SILENT")  # what a user sees
    logs = tmp_path / "logs"
    run_dir = logs / "x" / "kill"
    done = run_cli(
        "train.py", "model=mlp", "logger=wandb", *QUICK, f"paths.data_dir={mnist_data_dir}",
        f"paths.log_dir={logs}", f"hydra.run.dir={run_dir}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    first = tracker_ids(run_dir)["wandb"]["id"]
    resumed = run_cli("train.py", f"resume={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for result in (done, resumed):
        output = result.stdout + result.stderr
        assert "Tracking run with wandb" in output  # W&B printed what it prints
        assert "anonymous setting" not in output and "will be ignored" not in output, output
    assert tracker_ids(run_dir)["wandb"]["id"] == first
    runs = wandb_runs(wandb_records(run_dir))
    assert len(runs) == 2 and {r.run_id for r in runs} == {first}  # one run, in two parts
    assert {r.display_name for r in runs} == {"x/kill"}
