"""``hydra/launcher=slurm`` asks for what the trainer uses, and a refused ``sbatch`` is one line.

(A real refusal by a real ``sbatch``: tests/integration/test_slurm.py; by a stand-in from the
shell: tests/integration/test_cluster.py.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)
from submitit.core.utils import FailedJobError

from hydra_plugins.mnist_lit_cluster import SlurmLauncher
from mnist_lit.cluster import dry_run as cluster
from mnist_lit.cluster.launcher import sbatch_refusal, submission_error
from mnist_lit.config import gpus_per_task
from mnist_lit.errors import UserError

from ..conftest import compose_config

#: what Debian's sbatch (SLURM 22.05) wrote when it refused these options on the one-node cluster
GRES_REFUSAL = "sbatch: error: Invalid generic resource (gres) specification"
PARTITION_REFUSAL = (
    "sbatch: error: invalid partition specified: gpu\n"
    "sbatch: error: Batch job submission failed: Invalid partition name specified"
)
MEMORY_REFUSAL = (
    "sbatch: error: Memory specification can not be satisfied\n"
    "sbatch: error: Batch job submission failed: Requested node configuration is not available"
)


@pytest.fixture(autouse=True)
def _clear_hydra() -> Iterator[None]:
    yield
    GlobalHydra.instance().clear()


@pytest.mark.parametrize(
    ("trainer", "gpus"),
    [
        (["trainer=cpu"], None),
        (["trainer=ddp"], None),  # 2 processes on the CPU
        (["trainer=gpu"], 1),
        (["trainer=auto"], 1),  # a GPU when the node has one: it must be asked for
        (["trainer=ddp_multinode"], 4),
        (["trainer=ddp_multinode", "trainer.accelerator=cpu", "trainer.devices=2"], None),
    ],
)
def test_gpus_follow_the_trainer(trainer: list[str], gpus: int | None, tmp_path: Path) -> None:
    cfg = compose_config("train", ["hydra/launcher=slurm", *trainer], tmp_path / "run")
    assert cfg.hydra.launcher.gpus_per_node == gpus
    # what --gres would need: the key can still be set by hand
    cfg = compose_config(
        "train", ["hydra/launcher=slurm", *trainer, "hydra.launcher.gpus_per_node=null"], tmp_path
    )
    assert cfg.hydra.launcher.gpus_per_node is None


def test_gpus_per_task() -> None:
    assert gpus_per_task("cpu", 2) is None
    assert gpus_per_task("CPU", 2) is None
    assert gpus_per_task("gpu", 2) == 2
    assert gpus_per_task("cuda", 3) == 3
    assert gpus_per_task("auto", 1) == 1


@pytest.mark.parametrize(("trainer", "asked"), [("cpu", False), ("gpu", True), ("ddp", False)])
def test_dry_run_asks_for_gpus_as_the_trainer(
    trainer: str, asked: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster.main([f"trainer={trainer}", "model=mlp", "seed=1,2"])
    out, err = capsys.readouterr()
    assert err == ""
    assert bool(re.search(r"^#SBATCH --gpus-per-node=", out, re.MULTILINE)) is asked
    assert re.search(r"^#SBATCH --array=0-1%2$", out, re.MULTILINE)


@pytest.mark.parametrize(
    ("stderr", "option", "key"),
    [
        (GRES_REFUSAL, "--gpus-per-node", "trainer=cpu"),
        (GRES_REFUSAL, "--gres", "hydra.launcher.gpus_per_node=null"),
        (PARTITION_REFUSAL, "--partition", "hydra.launcher.partition="),
        (MEMORY_REFUSAL, "--mem", "hydra.launcher.mem_gb="),
        ("sbatch: error: Invalid --time specification", "--time", "hydra.launcher.timeout_min"),
    ],
)
def test_sbatch_refusal_names_the_option_and_the_key(stderr: str, option: str, key: str) -> None:
    error = sbatch_refusal(stderr)
    message = str(error)
    assert error.exit_code == 2
    assert "\n" not in message
    assert message.startswith("sbatch refused ")
    assert option in message.split(":")[0]
    assert key in message
    # sbatch's own words, not its closing "Batch job submission failed"
    assert stderr.splitlines()[0].split("error: ")[1] in message
    assert "Batch job submission failed" not in message


def test_an_unknown_refusal_points_at_the_dry_run() -> None:
    message = str(sbatch_refusal("sbatch: error: Something new went wrong"))
    assert "Something new went wrong" in message
    assert "python -m mnist_lit.cluster" in message


def test_submission_errors() -> None:
    assert isinstance(submission_error(FailedJobError(GRES_REFUSAL)), UserError)
    missing = FileNotFoundError(2, "No such file or directory", "sbatch")
    assert "sbatch not found" in str(submission_error(missing))
    # a job that failed while it ran (submitit raises that from results()) is not a refusal
    assert submission_error(FailedJobError("Job (task=0) failed during processing")) is None
    assert submission_error(FileNotFoundError(2, "No such file", "data.bin")) is None
    assert submission_error(ValueError("sbatch")) is None


def refusing_launch(error: Exception):  # type: ignore[no-untyped-def]
    def launch(self: SubmititSlurmLauncher, job_overrides: object, initial_job_idx: int) -> None:
        raise error

    return launch


def test_launcher_turns_a_refusal_into_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    launcher = SlurmLauncher(submitit_folder="unused")
    monkeypatch.setattr(
        SubmititSlurmLauncher, "launch", refusing_launch(FailedJobError(GRES_REFUSAL))
    )
    with pytest.raises(UserError, match=r"^sbatch refused --gpus-per-node"):
        launcher.launch([["seed=1"]], 0)

    failed_job = FailedJobError("Job (task=0) failed during processing with trace: ...")
    monkeypatch.setattr(SubmititSlurmLauncher, "launch", refusing_launch(failed_job))
    with pytest.raises(FailedJobError):
        launcher.launch([["seed=1"]], 0)
