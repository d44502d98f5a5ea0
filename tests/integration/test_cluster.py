"""SLURM: the real command lines (``train.py --cfg all`` with the SLURM launcher, and
``python -m mnist_lit.cluster``'s dry run and refusal from the shell).

(The dry run in-process, the layouts, Lightning under SLURM's variables: unit/test_cluster.py.)
"""

from __future__ import annotations

import os
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


def test_a_refused_sbatch_is_one_line(tmp_path: Path) -> None:
    """``python train.py -m hydra/launcher=slurm ...`` whose ``sbatch`` (a stand-in first on PATH
    that says what SLURM 22.05's says to a GPU on a cluster without any) refuses the job: one
    ``error:`` line naming the option and the key, exit code 2, no submitit traceback.
    (The real sbatch: tests/integration/test_slurm.py.)"""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(
        "#!/bin/sh\necho 'sbatch: error: Invalid generic resource (gres) specification' >&2\n"
        "exit 1\n"
    )
    sbatch.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/launcher=slurm", "trainer=gpu", "seed=1,2",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    line = error_line(result.stderr, alone=False)  # after sbatch's own line (submitit prints it)
    assert line.startswith("error: sbatch refused --gpus-per-node")
    assert "trainer=cpu" in line
