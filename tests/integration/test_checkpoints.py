"""Each command that loads a checkpoint refuses a file that is not one: exit code 2 and one line.

(Loading, the allow-list and every kind of bad file: ``tests/unit/test_checkpoints.py``; every
bad checkpoint through the command lines: ``test_cli_errors.py``.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..conftest import error_line, run_cli


@pytest.mark.parametrize("script", ["predict.py", "eval.py", "export.py"])
def test_commands_refuse_bad_checkpoints_with_one_line(script: str, tmp_path: Path) -> None:
    """Random bytes: exit code 2 and one ``error:`` line, from each command that loads one."""
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(os.urandom(2048))
    args = [f"ckpt_path={bad}", f"paths.log_dir={tmp_path / 'logs'}"]
    if script == "predict.py":
        args.append(f"images={tmp_path}")
    result = run_cli(script, *args, timeout=120)
    assert result.returncode == 2, result.stderr
    line = error_line(result.stderr)
    assert str(bad) in line and "not a PyTorch checkpoint" in line
    assert not list((tmp_path / "logs").rglob(".hydra")), "a run dir was left"
