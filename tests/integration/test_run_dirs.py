"""Runs started together each get a run dir of their own (the real resolver, in processes that
start at the same moment and ask for the same time-stamped dir)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mnist_lit.config import PROJECT_ROOT

CLAIM = """
import sys, time
from mnist_lit.config import unique_dir
start = float(sys.argv[2])
while time.time() < start:
    pass
print(unique_dir(sys.argv[1]))
"""


def test_processes_started_together_get_one_dir_each(tmp_path: Path) -> None:
    import time

    asked = str(tmp_path / "runs" / "2026-12-02_12-00-00")
    start = time.time() + 3.0  # every process is running by then, spinning until it
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIM, asked, str(start)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    claimed = [p.communicate(timeout=60)[0].strip() for p in processes]
    assert all(p.returncode == 0 for p in processes)
    assert len(set(claimed)) == 6
    assert sorted(p.name for p in Path(asked).parent.iterdir()) == sorted(
        Path(c).name for c in claimed
    )


def test_a_run_refused_when_its_trainer_is_built_leaves_no_run_dir(tmp_path: Path) -> None:
    """trainer.devices=0 passes the checks before Hydra (Lightning's to check) and is refused
    once the run dir exists: the dir goes with it."""
    done = subprocess.run(
        [sys.executable, "train.py", "trainer.devices=0", f"paths.log_dir={tmp_path}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert list((tmp_path / "train" / "runs").iterdir()) == []
