"""Sweeps as a user types them: parallel jobs, an Optuna search, the ablation experiment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from ..conftest import QUICK, run_cli

#: a job in seconds: few batches, no progress bar, no test unless asked
SWEEP_QUICK = [o for o in QUICK if "progress" not in o]


def run_sweep(log_dir: Path, *overrides: str) -> Path:
    """Run ``python train.py <overrides>`` (quick jobs, logs under ``log_dir``); its sweep dir."""
    result = run_cli("train.py", *overrides, *SWEEP_QUICK, f"paths.log_dir={log_dir}", timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (log_dir / "train" / "multiruns").iterdir()
    return sweep


def job_metrics(sweep: Path) -> dict[str, dict]:
    return {
        job.name: json.loads((job / "metrics.json").read_text())["metrics"]
        for job in sweep.iterdir()
        if job.name.isdigit()
    }


@pytest.mark.slow
def test_parallel_launcher_runs_jobs_side_by_side(tmp_path: Path, mnist_data_dir: Path) -> None:
    sweep = run_sweep(tmp_path, "-m", "hydra/launcher=parallel", "model=mlp", "seed=1,2")
    metrics = job_metrics(sweep)
    assert sorted(metrics) == ["0", "1"]
    assert metrics["0"]["val/acc_best"] != metrics["1"]["val/acc_best"]  # two seeds
    assert "2 of 2 jobs finished" in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_optuna_search_returns_the_best_trial(tmp_path: Path, mnist_data_dir: Path) -> None:
    sweep = run_sweep(tmp_path, "hparams_search=optuna", "model=mlp", "hydra.sweeper.n_trials=3")
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    values = {name: m["val/acc_best"] for name, m in job_metrics(sweep).items()}
    assert len(values) == 3
    assert best["best_value"] == pytest.approx(max(values.values()))
    assert set(best["best_params"]) == {
        "optimizer.lr",
        "optimizer.weight_decay",
        "model.dropout",
        "model.batchnorm",
        "model.width",
    }
    report = (sweep / "report.md").read_text()
    assert "Sorted by val/acc_best" in report and "3 of 3 jobs finished" in report


@pytest.mark.slow
def test_ablation_report_states_the_effects(tmp_path: Path, mnist_data_dir: Path) -> None:
    """The ablation grid cut to one model and two seeds: 8 jobs, and its report's effects."""
    sweep = run_sweep(tmp_path, "experiment=ablation", "model=mlp", "seed=1,2")
    report = (sweep / "report.md").read_text()
    assert "8 of 8 jobs finished" in report
    assert "## Configs (mean ± std over seeds)" in report
    assert "model.dropout 0.0 → 0.3 changes test/acc by" in report
    assert "model.batchnorm false → true changes test/acc by" in report
    assert report.count("(n = 4 pairs)") == 2  # each effect: 2 seeds x 2 levels of the other
