"""``experiment=robust`` trains with every augmentation on, and ``benchmarks/robustness.py``
scores the run on a generated check set through the predictors ``predict.py`` uses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mnist_lit.config import PROJECT_ROOT
from mnist_lit.data import pen_digits

from ..conftest import QUICK, error_line, run_cli

# the check set is the robustness benchmark's, beside it in benchmarks/, not the package's
sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
from check_set import CATEGORIES, generate


@pytest.fixture(scope="module")
def robust_run(tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path) -> Path:
    """A few batches of the robust recipe, tested: a run dir with metrics.json."""
    run_dir = tmp_path_factory.mktemp("robust") / "run"
    done = run_cli(
        "train.py",
        "experiment=robust",
        *QUICK,
        f"paths.data_dir={mnist_data_dir}",
        f"hydra.run.dir={run_dir}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_robust_recipe_trains_augmented_and_is_scored_on_the_check_set(
    robust_run: Path, tmp_path: Path
) -> None:
    metrics = json.loads((robust_run / "metrics.json").read_text())
    tested = metrics["metrics"]["test/acc"]
    assert 0 <= tested <= 1
    config = (robust_run / ".hydra" / "config.yaml").read_text()
    assert "thicken: 2.0" in config and "low_res: 0.5" in config
    assert "pen_digits:\n    fraction: 0.2" in config
    assert "label_smoothing: 0.1" in config
    # the model kept and tested is the last epoch's, where the one-cycle schedule ends
    assert Path(metrics["best_ckpt"]).name == f"epoch_{metrics['epochs'] - 1:03d}.ckpt"
    check_set = tmp_path / "check_set"
    generate(check_set, per_category=2, seed=0, per_style=1)
    out = tmp_path / "report"
    done = run_cli(
        "benchmarks/robustness.py",
        "--model",
        f"robust={robust_run}",
        "--check-set",
        str(check_set),
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((out / "robustness.json").read_text())
    (model,) = figures["models"]
    assert model["mnist_test_acc"] == pytest.approx(tested)
    assert Path(model["checkpoint"]).name == Path(metrics["best_ckpt"]).name
    assert set(model["by_category"]) == set(CATEGORIES)
    assert len(model["predictions"]) == 2 * (len(CATEGORIES) - 1) + len(pen_digits.STYLES)
    correct = sum(p["predicted"] == p["label"] for p in model["predictions"])
    assert model["check_set_acc"] == pytest.approx(correct / len(model["predictions"]))
    report = (out / "robustness.md").read_text()
    assert "| **check set, all** |" in report and report in done.stdout
    for category in CATEGORIES:
        assert f"| {category} |" in report
    for style in pen_digits.STYLES:  # a row per writing style of the held-apart pen digits
        assert f"| {style.name} |" in report
        assert f"pen/{style.name}" in model["by_source"]


def test_robustness_refuses_bad_models_in_one_line(tmp_path: Path) -> None:
    no_name = run_cli("benchmarks/robustness.py", "--model", "logs/x")
    assert no_name.returncode == 2 and "NAME=PATH" in error_line(no_name.stderr)
    (tmp_path / "check_set").mkdir()
    generate(tmp_path / "check_set", per_category=1, seed=0, categories=["font"])
    unfinished = run_cli(
        "benchmarks/robustness.py",
        "--model",
        f"x={tmp_path}",
        "--check-set",
        str(tmp_path / "check_set"),
        "--out",
        str(tmp_path / "out"),
    )
    assert unfinished.returncode == 2 and "best_ckpt" in error_line(unfinished.stderr)
    missing = run_cli(
        "benchmarks/robustness.py",
        "--model",
        f"x={tmp_path / 'none.ckpt'}",
        "--check-set",
        str(tmp_path / "check_set"),
        "--out",
        str(tmp_path / "out"),
    )
    assert missing.returncode == 2 and error_line(missing.stderr)
