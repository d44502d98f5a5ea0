"""SLURM for real: the one-node cluster of ``make slurm-up`` (src/mnist_lit/cluster/local/).

A sweep submitted with ``hydra/launcher=slurm`` runs as an array job and writes every job's
metrics and the report; the dry run printed the script ``sbatch`` received; a job preempted
mid-epoch (``scancel --signal=USR2``) requeues itself and ends with the metrics of a run that was
never stopped; a job ``sbatch`` refuses is one line. Every test is marked ``slurm`` and skips, with
one message, where SLURM is not installed or no cluster is up (``make slurm-up`` starts one).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mnist_lit.config import PROJECT_ROOT

from ..conftest import QUICK, error_line
from .conftest import RESUMABLE_RUN

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

#: the one-node cluster's script (``make slurm-up`` and ``make slurm-down`` run it)
SLURM_SH = PROJECT_ROOT / "src" / "mnist_lit" / "cluster" / "local" / "slurm.sh"
#: where ``slurm.sh up`` writes the cluster's config unless MNIST_LIT_SLURM_DIR moves it
DEFAULT_CONF = Path(os.environ.get("MNIST_LIT_SLURM_DIR", "/tmp/mnist-lit-slurm")) / "slurm.conf"
#: what fits the one-node cluster: 1 CPU and 1 GB a job (two run side by side on 2 cores), and
#: this interpreter's environment, which sbatch passes on to the job (no .venv to activate)
ON_THIS_CLUSTER = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
    "hydra.launcher.setup=[]",
]


def slurm_env() -> dict[str, str] | None:
    """The environment of SLURM's commands, pointed at a cluster that answers; None if none."""
    if shutil.which("sbatch") is None:
        return None
    env = dict(os.environ)
    if "SLURM_CONF" not in env and DEFAULT_CONF.is_file():
        env["SLURM_CONF"] = str(DEFAULT_CONF)
    try:
        states = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"],
            env=env,
            text=True,
            capture_output=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    up = states.returncode == 0 and re.search(r"^(idle|mixed|allocated)", states.stdout, re.M)
    return env if up else None


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    """The environment for commands that submit to the cluster (SLURM_CONF set), or a skip."""
    env = slurm_env()
    if env is None:
        pytest.skip(
            "no SLURM cluster up: sudo make slurm-up starts the one-node cluster"
            " (needs apt-get install -y slurm-wlm munge; docs/clusters.md)"
        )
    return {**env, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}


def test_the_cluster_config_describes_this_machine(tmp_path: Path) -> None:
    """``slurm.sh config``: the slurm.conf ``make slurm-up`` would write, with this machine's CPUs,
    the process tracking that needs no cgroups, one partition, everything under its state dir."""
    if shutil.which("slurmd") is None:
        pytest.skip("SLURM is not installed: apt-get install -y slurm-wlm munge (docs/clusters.md)")
    done = subprocess.run(
        [str(SLURM_SH), "config"],
        env={**os.environ, "MNIST_LIT_SLURM_DIR": str(tmp_path / "state")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if line and line[0] != "#"]
    settings = dict(line.split("=", 1) for line in lines)
    assert not [line for line in lines if "@" in line]  # every field filled in
    assert settings["ProctrackType"] == "proctrack/linuxproc"
    assert settings["TaskPlugin"] == "task/none"
    assert settings["AuthInfo"].startswith(f"socket={tmp_path / 'state'}/munge/")
    assert re.search(rf"^NodeName=\S+ CPUs={os.cpu_count()} .*RealMemory=\d+", done.stdout, re.M)
    assert len(re.findall(r"^PartitionName=", done.stdout, re.M)) == 1
    assert not (tmp_path / "state").exists()  # printed, nothing written


def train(*args: str, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess[str]:
    """``python train.py <args>`` from the repo root, in its own process group: killed whole if it
    outlives ``timeout`` (with the jobs it submitted, by ``cancel_jobs``)."""
    process = subprocess.Popen(
        [sys.executable, str(PROJECT_ROOT / "train.py"), *args],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def job_ids(sweep_dir: Path) -> list[str]:
    """The SLURM job ids of a sweep (submitit names a folder after each: ``<id>`` or
    ``<array id>_<task>``)."""
    folder = sweep_dir / ".submitit"
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name))


def cancel_jobs(sweep_dir: Path, env: dict[str, str]) -> None:
    """``scancel`` whatever the sweep submitted: a failed test leaves no job in the queue."""
    if (sweep_dir / ".submitit").is_dir() and job_ids(sweep_dir):
        subprocess.run(
            ["scancel", *{i.split("_")[0] for i in job_ids(sweep_dir)}],
            env=env,
            capture_output=True,
            timeout=30,
            check=False,
        )


@pytest.fixture(scope="module")
def sweep(
    cluster: dict[str, str], tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path
) -> Iterator[tuple[Path, list[str], subprocess.CompletedProcess[str]]]:
    """A 2-job sweep (seeds 1 and 2, QUICK's few batches) run to its end on the cluster."""
    sweep_dir = tmp_path_factory.mktemp("slurm") / "sweep"
    overrides = [
        *ON_THIS_CLUSTER,
        *QUICK,
        "model=mlp",
        "seed=1,2",
        f"paths.data_dir={mnist_data_dir}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    try:
        result = train("-m", *overrides, env=cluster, timeout=420)
        yield sweep_dir, overrides, result
    finally:
        cancel_jobs(sweep_dir, cluster)


def test_a_sweep_runs_as_an_array_job(
    sweep: tuple[Path, list[str], subprocess.CompletedProcess[str]],
) -> None:
    sweep_dir, _, result = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    (array,) = {i.split("_")[0] for i in job_ids(sweep_dir)}
    assert sorted(job_ids(sweep_dir)) == sorted([array, f"{array}_0", f"{array}_1"])
    for job, seed in (("0", 1), ("1", 2)):
        summary = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert summary["seed"] == seed
        assert 0 < summary["metrics"]["test/acc"] <= 1
        # trained under SLURM, as array task <job> of one array job
        assert (sweep_dir / job / "slurm_job_id").read_text().strip() == f"{array}_{job}"
    assert "2 of 2 jobs finished" in (sweep_dir / "report.md").read_text()


def test_the_dry_run_printed_what_sbatch_received(
    sweep: tuple[Path, list[str], subprocess.CompletedProcess[str]], cluster: dict[str, str]
) -> None:
    """``python -m mnist_lit.cluster`` with the sweep's overrides prints, to the byte, the script
    that SLURM kept for the array job (``scontrol write batch_script``)."""
    sweep_dir, overrides, result = sweep
    assert result.returncode == 0, result.stderr[-3000:]
    (array,) = {i.split("_")[0] for i in job_ids(sweep_dir)}
    received = subprocess.run(
        ["scontrol", "write", "batch_script", array, "-"],
        env=cluster,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    dry = subprocess.run(
        [sys.executable, "-m", "mnist_lit.cluster", *overrides],
        cwd=PROJECT_ROOT,
        env=cluster,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr[-2000:]
    printed = dry.stdout.split("# ---- sbatch script 1 of 1 ----\n", 1)[1]
    printed = printed.split("\n# ---- each job:", 1)[0]
    assert received.stdout.startswith("#!/bin/bash")
    assert printed.strip() == received.stdout.strip()


def test_a_preempted_job_requeues_and_ends_as_if_never_stopped(
    cluster: dict[str, str], tmp_path: Path, mnist_data_dir: Path
) -> None:
    """One job, 2 epochs of 8 steps: ``scancel --signal=USR2`` once its step-3 checkpoint is
    written; it stops after its step with a checkpoint, requeues itself, runs again (after the
    cluster's ``cred_expire``, 10 s) and resumes, and ``train.py -m`` sees it end."""
    common = [*RESUMABLE_RUN, "seed=1", f"paths.data_dir={mnist_data_dir}"]
    straight = tmp_path / "straight"
    done = train(*common, f"hydra.run.dir={straight}", env=cluster, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "-m",
        *ON_THIS_CLUSTER,
        *common,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    process = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=cluster,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        marker = sweep_dir / "0" / "checkpoints" / "resume" / "step_0000003.ckpt"
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert process.poll() is None, process.communicate()[1][-3000:]
            assert time.monotonic() < deadline, f"{marker} never appeared"
            time.sleep(0.05)
        (job,) = job_ids(sweep_dir)
        subprocess.run(["scancel", "--signal=USR2", job], env=cluster, timeout=30, check=True)
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        cancel_jobs(sweep_dir, cluster)
    assert process.returncode == 0, stderr[-3000:]

    log = (sweep_dir / ".submitit" / job / f"{job}_0_log.err").read_text()
    assert "[mnist-lit] preempted by SLURM (SIGUSR2): requeued job" in log
    line = re.search(r"error: stopped by SIGTERM at step (\d+)", log)
    assert line, log[-3000:]
    step = int(line[1])
    assert step >= 3 and step < 16  # mid-run: the second epoch ends at step 16
    assert (sweep_dir / "0" / "checkpoints" / "resume" / f"step_{step:07d}.ckpt").is_file()
    shown = subprocess.run(
        ["scontrol", "show", "job", job],
        env=cluster,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "Restarts=1" in shown.stdout and "JobState=COMPLETED" in shown.stdout
    resumed = json.loads((sweep_dir / "0" / "metrics.json").read_text())["metrics"]
    assert resumed == json.loads((straight / "metrics.json").read_text())["metrics"]


def test_a_refused_submission_is_one_line(cluster: dict[str, str], tmp_path: Path) -> None:
    """A GPU on a cluster without any: sbatch refuses it, train.py says which key to change."""
    quick = [o for o in QUICK if o != "trainer=cpu"]
    result = train(
        "-m",
        *ON_THIS_CLUSTER,
        *quick,
        "trainer=gpu",
        "model=mlp",
        "seed=1,2",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        env=cluster,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    line = error_line(result.stderr, alone=False)  # after sbatch's own line, which submitit prints
    assert line.startswith("error: sbatch refused --gpus-per-node")
    assert "trainer=cpu" in line


def test_ddp_through_srun_matches_one_node(
    cluster: dict[str, str], tmp_path: Path, mnist_data_dir: Path
) -> None:
    """``srun`` starts ``trainer=ddp_multinode``'s ranks: 2 tasks on the one node (one node only:
    this cluster has no second one), Lightning's SLURMEnvironment gives them ranks 0 and 1, and
    they train to the metrics of ``trainer=ddp``'s 2 processes, which Lightning started itself."""
    quick = [o for o in QUICK if o != "trainer=cpu"] + [
        "model=mlp",
        f"paths.data_dir={mnist_data_dir}",
    ]
    one_node = tmp_path / "one_node"
    result = train(*quick, "trainer=ddp", f"hydra.run.dir={one_node}", env=cluster, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    under_srun = tmp_path / "srun"
    srun = [
        "srun",
        "--nodes=1",
        "--ntasks=2",
        "--ntasks-per-node=2",
        "--cpus-per-task=1",
        "--mem=2G",
        "--time=10",
        "--job-name=ddp-srun",
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        *quick,
        "trainer=ddp_multinode",
        "trainer.accelerator=cpu",
        "trainer.num_nodes=1",
        "trainer.devices=2",
        f"hydra.run.dir={under_srun}",
    ]
    process = subprocess.Popen(
        srun,
        cwd=PROJECT_ROOT,
        env=cluster,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # srun cancels its job step on SIGTERM
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            subprocess.run(["scancel", "--name=ddp-srun"], env=cluster, timeout=30, check=False)
    assert process.returncode == 0, stderr[-3000:]

    logs = "".join(p.read_text() for p in under_srun.rglob("train.log"))
    assert "rank 0 of 2" in logs and "rank 1 of 2" in logs, logs[-2000:]
    summary = json.loads((under_srun / "metrics.json").read_text())
    assert summary["metrics"] == json.loads((one_node / "metrics.json").read_text())["metrics"]
