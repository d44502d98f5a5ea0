"""``debug=profiler``: Lightning's profiler report lands in the run dir."""

from __future__ import annotations

from pathlib import Path

from ..conftest import QUICK, run_cli


def test_profiler_report_is_written_into_the_run_dir(tmp_path: Path, mnist_data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    quick = [o for o in QUICK if "limit_" not in o]  # debug=profiler sets its own limits
    overrides = ["debug=profiler", *quick, "model=mlp", "trainer.limit_train_batches=4"]
    done = run_cli("train.py", *overrides, f"paths.data_dir={mnist_data_dir}",
                   f"hydra.run.dir={run_dir}")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    fit = (run_dir / "fit-profiler.txt").read_text()
    assert "FIT Profiler Report" in fit and "run_training_batch" in fit
    assert "test_step" in (run_dir / "test-profiler.txt").read_text()
