"""Commands answer before torch loads: ``--help``, ``--cfg``, and every command line refused by
the checks (a typo, a bad value, a missing checkpoint file) import neither torch nor Lightning.
Checked by what is in ``sys.modules`` when the command ends, not with a timer."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mnist_lit.config import PROJECT_ROOT

#: runs a root script as ``python <script> <args>`` does, then reports the heavy modules loaded
PROBE = """
import runpy, sys
sys.argv = sys.argv[1:]
code = 0
try:
    if sys.argv[0] == "-m":  # python -m <module> ...
        sys.argv = sys.argv[1:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as stop:
    code = stop.code
heavy = sorted(m for m in ("torch", "lightning", "torchvision", "torchmetrics") if m in sys.modules)
print("HEAVY", ",".join(heavy), "EXIT", code, file=sys.stderr)
"""


@pytest.mark.parametrize(
    "command",
    [
        "train.py --help",
        "train.py --cfg job",
        "train.py --info",
        "train.py modle=cnn",
        "train.py model.dropout=2",
        "train.py ckpt_path=missing.ckpt",
        "train.py resume=missing/run",
        "eval.py ckpt_path=missing.ckpt",
        "eval.py --help",
        "predict.py ckpt_path=missing.ckpt images=x",
        "predict.py batch_size=0",
        "export.py ckpt_path=missing.ckpt",
        "export.py format=tflite",
        "predict.py --help",
        "export.py --cfg job",
        "-m mnist_lit.cluster seed=1,2",
    ],
)
def test_answered_without_torch(command: str) -> None:
    script, *args = command.split()
    target = script if script == "-m" else str(PROJECT_ROOT / script)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, target, *args],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    report = done.stderr.strip().splitlines()[-1]
    assert report.startswith("HEAVY  EXIT"), f"{command}: {report}"
    refused = "--" not in command and "cluster" not in command
    assert report.endswith("EXIT 2" if refused else "EXIT 0") or report.endswith("EXIT None")
