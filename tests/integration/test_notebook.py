"""The notebook runs top to bottom on a small finished run, so it never rots."""

from __future__ import annotations

import nbformat
import pytest
from nbclient import NotebookClient

from mnist_lit.config import PROJECT_ROOT
from mnist_lit.train import train


@pytest.mark.slow
def test_inspect_run_notebook_executes(train_cfg, monkeypatch) -> None:
    cfg = train_cfg("model=mlp", "trainer.max_epochs=2")
    train(cfg)
    monkeypatch.setenv("MNIST_LIT_RUN_DIR", str(cfg.paths.output_dir))
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "inspect_run.ipynb", as_version=4)
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(PROJECT_ROOT)}},
    ).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert str(cfg.paths.output_dir) in text
    assert "test accuracy:" in text and "top-3" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # curves, confusion matrix, mistakes, examples
