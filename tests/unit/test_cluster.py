"""SLURM and multi-node DDP, in-process, as far as a machine without SLURM or GPUs allows.

The configs compose, the dry run (``python -m mnist_lit.cluster``'s ``main``) prints the sbatch
script whose layout matches the trainer config and the overrides, a bad command line fails in one
line, and Lightning accepts that layout under SLURM's and torchrun's environment variables.
(The real command lines: tests/integration/test_cluster.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from mnist_lit.hardware import instantiate_trainer

from mnist_lit import cluster
from mnist_lit.config import PROJECT_ROOT

from ..conftest import compose_config

SLURM = ["hydra/launcher=slurm", "trainer=ddp_multinode"]


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def dry_run(capsys: pytest.CaptureFixture[str], *overrides: str) -> str:
    """``python -m mnist_lit.cluster <overrides>``'s stdout (in-process; stderr must be empty)."""
    cluster.main(list(overrides))
    out, err = capsys.readouterr()
    assert err == ""
    return out


def sbatch_flags(out: str) -> dict[str, str]:
    """``#SBATCH --key=value`` lines as ``{key: value}``."""
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", out, flags=re.MULTILINE))


def test_slurm_launcher_takes_its_layout_from_the_trainer(tmp_path: Path) -> None:
    cfg = compose_config("train", SLURM, tmp_path / "run")
    launcher = cfg.hydra.launcher
    assert launcher._target_ == cluster.SLURM_LAUNCHER
    assert (cfg.trainer.strategy, cfg.trainer.accelerator) == ("ddp", "gpu")
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 4)
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert launcher.setup == [f"source {PROJECT_ROOT}/.venv/bin/activate"]
    assert launcher.submitit_folder == f"{cfg.hydra.sweep.dir}/.submitit/%j"

    cfg = compose_config("train", [*SLURM, "trainer.num_nodes=3", "trainer.devices=8"], tmp_path)
    launcher = cfg.hydra.launcher
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (3, 8, 8)


@pytest.mark.parametrize(
    ("overrides", "nodes", "per_node"),
    [([], 2, 4), (["trainer.num_nodes=3", "trainer.devices=2"], 3, 2), (["trainer=gpu"], 1, 1)],
)
def test_dry_run_prints_the_layout_of_the_config(
    overrides: list[str], nodes: int, per_node: int, capsys: pytest.CaptureFixture[str]
) -> None:
    out = dry_run(capsys, *overrides, "hydra.launcher.partition=gpu")
    flags = sbatch_flags(out)
    assert flags["nodes"] == str(nodes)
    assert flags["ntasks-per-node"] == str(per_node)
    assert flags["gpus-per-node"] == str(per_node)
    assert flags["partition"] == "gpu"
    assert "array" not in flags  # one job: no array
    assert out.count("#!/bin/bash") == 1
    assert re.search(r"^srun --unbuffered .* -u -m submitit\.core\._submit ", out, re.MULTILINE)
    assert f"{nodes * per_node} process(es), DDP ranks 0-{nodes * per_node - 1}" in out


def test_dry_run_of_a_sweep_is_one_array_job(capsys: pytest.CaptureFixture[str]) -> None:
    out = dry_run(capsys, "-m", "seed=1,2,3")
    assert sbatch_flags(out)["array"] == "0-2%3"
    sweep_dir = re.search(r"^#SBATCH --output=(\S+)/\.submitit/", out, re.MULTILINE)[1]
    for num in range(3):
        assert f"#   job {num}: python train.py trainer=ddp_multinode seed={num + 1}\n" in out
        assert f"#          -> {sweep_dir}/{num}\n" in out
    # (a sweep in an experiment's config: integration/test_cluster.py, 24 jobs to compose)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model.dropuot=0.5"], ("model.dropuot",)),
        (["model.dropout=1.5"], ("model.dropout",)),
        (["hydra.launcher.nodes=3"], ("trainer.num_nodes", "hydra.launcher.nodes")),
        (["seed=1,2", "trainer.devices=2,4"], ("trainer.devices", "hydra.launcher.")),
        (["trainer.devices=auto"], ("trainer.devices", "auto")),
        (["trainer.num_nodes=0"], ("trainer.num_nodes",)),
        (["hydra/launcher=parallel"], ("hydra/launcher=parallel",)),
        (["--cfg", "job"], ("--cfg",)),
    ],
)
def test_bad_command_lines_fail_in_one_line(
    overrides: list[str], named: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cluster.main(overrides)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for text in named:
        assert text in err


def test_lightning_accepts_the_layout_under_slurm_and_torchrun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer config on rank 5 of 8, started by srun (with the dry run's #SBATCH layout) or
    by torchrun: Lightning picks the cluster environment, the ranks, and finds no mismatch."""
    flags = sbatch_flags(dry_run(capsys, "trainer.num_nodes=2", "trainer.devices=4"))
    nodes, per_node = int(flags["nodes"]), int(flags["ntasks-per-node"])
    cfg = compose_config("train", [*SLURM, "trainer.num_nodes=2", "trainer.devices=4"], tmp_path)
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # Lightning sets it
    for key in ("MASTER_ADDR", "MASTER_PORT"):  # Lightning may set these: restore them after
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    srun = {
        "SLURM_NTASKS": str(nodes * per_node),
        "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_NNODES": str(nodes),
        "SLURM_NODELIST": "gpu[07-08]",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "train",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
    }
    torchrun = {
        "TORCHELASTIC_RUN_ID": "mnist",
        "WORLD_SIZE": "8",
        "RANK": "5",
        "LOCAL_RANK": "1",
        "GROUP_RANK": "1",
    }
    for env, environment in ((srun, SLURMEnvironment), (torchrun, TorchElasticEnvironment)):
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            # the GPU config, built on the CPU (this machine has no GPU)
            trainer = instantiate_trainer(
                cfg.trainer, accelerator="cpu", deterministic=False, logger=False
            )
            cluster_env = trainer.strategy.cluster_environment
            assert isinstance(cluster_env, environment)
            assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 4, 8)
            assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (5, 1, 1)
            cluster_env.validate_settings(num_devices=4, num_nodes=2)  # what fit() checks first
