"""Sweeps as a user types them: parallel jobs, an Optuna search, the ablation experiment."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from mnist_lit.config import PROJECT_ROOT

from ..conftest import QUICK, error_line, run_cli
from .dashboard import dashboard_trials

#: a job in seconds: few batches, no progress bar, no test unless asked
SWEEP_QUICK = [o for o in QUICK if "progress" not in o]


def run_sweep(log_dir: Path, *overrides: str) -> tuple[Path, str]:
    """Run ``python train.py <overrides>`` (quick jobs, logs under ``log_dir``); its sweep dir
    and what it printed."""
    result = run_cli("train.py", *overrides, *SWEEP_QUICK, f"paths.log_dir={log_dir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep, result.stdout


def job_metrics(sweep: Path) -> dict[str, dict]:
    return {
        job.name: json.loads((job / "metrics.json").read_text())["metrics"]
        for job in sweep.iterdir()
        if job.name.isdigit()
    }


@pytest.mark.slow
def test_parallel_launcher_runs_jobs_side_by_side(tmp_path: Path, mnist_data_dir: Path) -> None:
    sweep, _ = run_sweep(tmp_path, "-m", "hydra/launcher=parallel", "model=mlp", "seed=1,2")
    metrics = job_metrics(sweep)
    assert sorted(metrics) == ["0", "1"]
    assert metrics["0"]["val/acc_best"] != metrics["1"]["val/acc_best"]  # two seeds
    assert "2 of 2 jobs finished" in (sweep / "report.md").read_text()


SEARCH_SPACE = {
    "optimizer.lr",
    "optimizer.weight_decay",
    "model.dropout",
    "model.batchnorm",
    "model.width",
}


@pytest.mark.slow
def test_optuna_search_returns_the_best_trial(tmp_path: Path, mnist_data_dir: Path) -> None:
    """A 3-trial search, 2 trials at a time: the best trial, the report with every Optuna view,
    no nan test accuracy printed (trials are not tested), and the study as the current
    optuna-dashboard serves it."""
    sweep, out = run_sweep(
        tmp_path,
        "hparams_search=optuna",
        "model=mlp",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2",
    )
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = {name: m["val/acc_best"] for name, m in job_metrics(sweep).items()}
    assert len(values) == 3
    assert best["best_value"] == pytest.approx(max(values.values()))
    assert set(best["best_params"]) == SEARCH_SPACE
    report = (sweep / "report.md").read_text()
    assert "Sorted by val/acc_best" in report and "3 of 3 jobs finished" in report
    for view in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (sweep / f"{view}.png").stat().st_size > 1000, view
    summaries = [line for line in out.splitlines() if line.startswith("[mnist-lit] model=")]
    assert len(summaries) == 3 and not any("test/acc" in line for line in summaries), out

    trials = dashboard_trials(
        f"sqlite:///{tmp_path / 'optuna' / 'train_optuna.db'}", "train_optuna"
    )
    assert [t["state"] for t in trials] == ["Complete"] * 3
    assert sorted(t["values"][0] for t in trials) == pytest.approx(sorted(values.values()))
    assert all({p["name"] for p in t["params"]} == SEARCH_SPACE for t in trials)


def test_a_study_file_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    """Before any trial: the file is named, with the fix (exit 2), and left as it was."""
    study_file = tmp_path / "optuna" / "train_optuna.db"
    study_file.parent.mkdir()
    study_file.write_text("not a database\n")
    result = run_cli(
        "train.py", "hparams_search=optuna", "model=mlp", *SWEEP_QUICK, f"paths.log_dir={tmp_path}"
    )
    assert result.returncode == 2, result.stderr[-3000:]
    line = error_line(result.stderr, alone=False)
    assert f"the Optuna study file {study_file} cannot be read (file is not a database)" in line
    assert "move it away" in line and "hydra.sweeper.study_name=<name>" in line
    assert study_file.read_text() == "not a database\n"


@pytest.mark.slow
def test_ablation_report_states_the_effects(tmp_path: Path, mnist_data_dir: Path) -> None:
    """The ablation grid cut to one model and two seeds: 8 jobs, and its report's effects."""
    sweep, _ = run_sweep(tmp_path, "experiment=ablation", "model=mlp", "seed=1,2")
    report = (sweep / "report.md").read_text()
    assert "8 of 8 jobs finished" in report
    assert "## Configs (mean ± std over seeds)" in report
    assert "model.dropout 0.0 → 0.3 changes test/acc by" in report
    assert "model.batchnorm false → true changes test/acc by" in report
    assert report.count("(n = 4 pairs)") == 2  # each effect: 2 seeds x 2 levels of the other


def _study(log_dir: Path, name: str = "train_optuna"):
    import optuna

    from mnist_lit.sweeps.studies import open_storage

    storage = open_storage(f"sqlite:///{log_dir / 'optuna' / f'{name}.db'}")
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_a_killed_optuna_search_goes_on_when_rerun(tmp_path: Path, mnist_data_dir: Path) -> None:
    """SIGKILL a 3-trial search during its second trial; the same command goes on with the study:
    the interrupted trial fails and runs again with its params, 3 trials end in all, numbered
    as the jobs, and the last report covers every trial."""
    import optuna

    command = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "hparams_search=optuna",
        "model=mlp",
        "hydra.sweeper.n_trials=3",
        *(o for o in SWEEP_QUICK if "limit_train_batches" not in o),
        "+trainer.limit_train_batches=40",  # a trial long enough to be killed in
        f"paths.log_dir={tmp_path}",
    ]
    first = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    try:
        while not list(tmp_path.glob("train/multiruns/*/1/.hydra/overrides.yaml")):
            assert first.poll() is None and time.monotonic() < deadline, "trial 1 never started"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = _study(tmp_path).trials
    assert before[-1].state == optuna.trial.TrialState.RUNNING

    again = subprocess.run(
        command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert again.returncode == 0, again.stderr[-3000:]
    study = _study(tmp_path)
    states = [t.state.name for t in study.trials]
    killed = before[-1].number
    assert states[killed] == "FAIL" and states.count("COMPLETE") == 3, states
    assert study.user_attrs["interrupted"] == [killed]
    assert study.trials[killed + 1].params == before[-1].params  # run again, same params
    # every job dir is its trial's number, and no number is used twice
    sweeps = sorted((tmp_path / "train" / "multiruns").iterdir())
    assert len(sweeps) == 2
    numbers = [int(job.name) for sweep in sweeps for job in sweep.iterdir() if job.name.isdigit()]
    assert sorted(numbers) == [t.number for t in study.trials]
    report = (sweeps[-1] / "report.md").read_text()
    assert f"3 of {len(study.trials)} jobs finished" in report
    assert f"| {killed} | " in report and "interrupted, run again" in report
    best = yaml.safe_load((sweeps[-1] / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(study.best_value)
    assert (sweeps[-1] / "optimization_history.png").stat().st_size > 1000

    # the study is full: the same command runs nothing more; other overrides are refused
    done = run_cli("train.py", *command[2:], timeout=300)
    assert done.returncode == 0 and "3 of 3 trials done, 0 to run" in done.stdout
    other = run_cli("train.py", *command[2:], "model.batchnorm=false", timeout=300)
    assert other.returncode == 2
    assert "was started by other overrides" in error_line(other.stderr, alone=False)
