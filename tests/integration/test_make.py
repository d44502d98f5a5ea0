"""The Makefile's viewers: make tensorboard, make mlflow and make notebook take PORT= and ARGS=
and look in the log dir (LOG_DIR=, else the config's paths.log_dir: tests/unit/test_config.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_lit.config import PROJECT_ROOT

#: the target, and the port it opens when PORT= is not given
VIEWERS = {"tensorboard": "6006", "mlflow": "5000", "notebook": "8888"}


def planned(*args: str) -> str:
    """What ``make -n`` would run (nothing is run), with this environment's venv; under
    ``make test`` a nested make would also print the directory it enters and leaves."""
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", *args, f"VENV={venv}"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
@pytest.mark.parametrize("target", list(VIEWERS))
def test_a_viewer_takes_its_port_and_more_options(target: str, tmp_path: Path) -> None:
    default = planned(target, f"LOG_DIR={tmp_path}").splitlines()[-1]
    assert f"--port {VIEWERS[target]}" in default
    chosen = planned(target, f"LOG_DIR={tmp_path}", "PORT=7123", "ARGS=--some-option").splitlines()
    assert "--port 7123" in chosen[-1] and chosen[-1].endswith("--some-option")
    if target != "notebook":  # the notebook asks the config itself (config.log_dir)
        assert str(tmp_path) in chosen[-1]
