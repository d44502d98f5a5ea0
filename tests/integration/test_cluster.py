"""SLURM: the real command lines (``train.py --cfg all`` with the SLURM launcher, and
``python -m mnist_lit.cluster``'s dry run and refusal from the shell).

(The dry run in-process, the layouts, Lightning under SLURM's variables: unit/test_cluster.py.)
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.core.global_hydra import GlobalHydra

from mnist_lit.cluster import dry_run as cluster
from mnist_lit.config import PROJECT_ROOT

from ..conftest import error_line, run_cli

SLURM = ["hydra/launcher=slurm", "trainer=ddp_multinode"]


def test_train_cli_composes_both_configs() -> None:
    """``python train.py ... --cfg all``: the launcher and trainer configs as train.py sees them."""
    result = run_cli("train.py", *SLURM, "trainer.num_nodes=3", "--cfg", "all")
    assert result.returncode == 0, result.stderr[-2000:]
    cfg = yaml.safe_load(result.stdout)
    assert cfg["hydra"]["launcher"]["_target_"] == cluster.SLURM_LAUNCHER
    assert cfg["hydra"]["launcher"]["nodes"] == "${oc.select:trainer.num_nodes,1}"
    assert cfg["hydra"]["launcher"]["tasks_per_node"] == "${oc.select:trainer.devices,1}"
    assert cfg["trainer"]["num_nodes"] == 3 and cfg["trainer"]["strategy"] == "ddp"
    assert cfg["callbacks"]["slurm_requeue"]["_target_"] == cluster.REQUEUE_CALLBACK


def test_dry_run_submits_and_creates_nothing(tmp_path: Path) -> None:
    """The real command line: exit 0, the script on stdout, no sweep dir made."""
    result = subprocess.run(
        [sys.executable, "-m", "mnist_lit.cluster", f"paths.log_dir={tmp_path}/logs"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "#SBATCH --nodes=2" in result.stdout
    assert "#SBATCH --signal=USR2@120" in result.stdout  # the preemption signal
    assert (
        "# (callbacks.slurm_requeue: mnist_lit.cluster.slurm.RequeueOnPreemption)" in result.stdout
    )
    assert f"#SBATCH --output={tmp_path}/logs/train/multiruns/" in result.stdout
    assert not (tmp_path / "logs").exists()


def test_bad_command_line_from_the_shell() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mnist_lit.cluster", "trainer.num_nodes=0"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "trainer.num_nodes" in error_line(result.stderr)


def test_dry_run_counts_the_sweep_in_an_experiments_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """experiment=ablation's hydra.sweeper.params: 2 x 2 x 2 x 3 jobs, one array job."""
    try:
        cluster.main(["experiment=ablation"])
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr()
    assert err == ""
    assert re.search(r"^#SBATCH --array=0-23%24$", out, re.MULTILINE)
