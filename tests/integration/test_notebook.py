"""The notebook runs top to bottom on any finished run, so it never rots: one logged with
TensorBoard only, CSV only or MLflow only, and one with no curves it can read (W&B only)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

from mnist_lit.config import PROJECT_ROOT

from ..conftest import QUICK, run_cli

#: the run's logger, and where the notebook says its curves came from (None: none it reads)
RUNS = {
    # the run tests in bf16: the notebook must measure its accuracy in bf16 too
    "tensorboard": (["logger=tensorboard", "trainer.precision=bf16-mixed"], "TensorBoard"),
    "csv": (["logger=csv"], "CSV"),
    "mlflow": (["logger=mlflow"], "MLflow"),
    "wandb": (["logger=wandb"], None),
}


def executed(log_dir: Path) -> list[nbformat.NotebookNode]:
    """The notebook's outputs, run on the newest run under ``log_dir`` (``LOG_DIR`` set in a
    cell after its parameters cell, as papermill does), with a last cell that says whether
    mlflow was imported."""
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "inspect_run.ipynb", as_version=4)
    at = next(i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", []))
    notebook.cells.insert(at + 1, new_code_cell(f"LOG_DIR = {str(log_dir)!r}"))
    notebook.cells.append(
        new_code_cell('import sys\nprint("mlflow imported:", "mlflow" in sys.modules)')
    )
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(PROJECT_ROOT)}},
    ).execute()
    return [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(RUNS))
def test_inspect_run_notebook_executes_on_any_run(
    kind: str, tmp_path: Path, mnist_data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides, curves_from = RUNS[kind]
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("MNIST_LIT_RUN_DIR", raising=False)
    logs = tmp_path / "logs"
    paths = [f"paths.data_dir={mnist_data_dir}", f"paths.log_dir={logs}"]
    done = run_cli("train.py", "model=mlp", *QUICK, *overrides, *paths)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (logs / "train" / "runs").iterdir()
    run_accuracy = json.loads((run_dir / "metrics.json").read_text())["metrics"]["test/acc"]

    outputs = executed(logs)
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert str(run_dir) in text  # the newest run under paths.log_dir
    if curves_from:
        assert f"learning curves from {curves_from}" in text
    else:
        assert "no learning curves: the run's loggers (wandb)" in text
    # measured as the run measured it: its test batches (QUICK: 2 of 1000) and precision
    shown = re.search(r"test accuracy: ([\d.]+)% on (\d+) images, (\S+)", text)
    assert shown is not None, text
    assert shown[1] == f"{100 * run_accuracy:.2f}" and shown[2] == "2000"
    assert f"the run's own: {100 * run_accuracy:.2f}%, the same" in text
    assert shown[3] == ("bf16-mixed" if kind == "tensorboard" else "32-true")
    assert "top-3" in text
    assert f"mlflow imported: {kind == 'mlflow'}" in text  # the trackers extra only for MLflow
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == (4 if curves_from else 3)  # curves, confusion, mistakes, examples
