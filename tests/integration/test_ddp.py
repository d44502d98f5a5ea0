"""DDP (``trainer=ddp``): 2 processes on the CPU, run as a user types it.

(How the sampler and the data module split the data by rank: tests/unit/test_datamodule.py and
tests/integration/test_datamodule.py; the rank plumbing, with stand-ins: unit/test_processes.py.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn.functional import cross_entropy

from mnist_lit.classifier import LitClassifier
from mnist_lit.config import PROJECT_ROOT
from mnist_lit.data import MNISTDataModule
from mnist_lit.train import resolve_precision

from ..conftest import QUICK, run_cli

#: QUICK's few batches, on 2 DDP ranks, with the MLP
DDP_QUICK = [o for o in QUICK if o != "trainer=cpu"] + ["trainer=ddp", "model=mlp"]
RANK_DIR = ".pl_hydra_rank_1"


def stray_runs(marker: Path) -> list[Path]:
    """Run dirs under the repo's logs/ made by a run that logs under ``marker`` (there should be
    none: a rank that composed its config from conf/ instead of its job's would make one)."""
    runs = (PROJECT_ROOT / "logs" / "train").glob("*runs/*/.hydra/config.yaml")
    return [config.parent.parent for config in runs if str(marker) in config.read_text()]


def assert_rank_joined(job: Path) -> None:
    """Rank 1 composed rank 0's config (seed, data, callbacks...) and ran in this job's dir."""
    rank0 = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
    rank1 = yaml.safe_load((job / RANK_DIR / "config.yaml").read_text())
    assert rank1 == rank0
    hydra = yaml.safe_load((job / RANK_DIR / "hydra.yaml").read_text())["hydra"]
    assert Path(hydra["runtime"]["output_dir"]) == job
    # each rank uses its share of the cores (Lightning's and train.py's thread cap)
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // 2))
    assert f"rank 0 of 2: {threads} CPU threads" in (job / "train.log").read_text()
    assert f"rank 1 of 2: {threads} CPU threads" in (job / RANK_DIR / "train.log").read_text()


@pytest.mark.slow
def test_ddp_run_writes_one_run_dir(tmp_path: Path, mnist_data_dir: Path) -> None:
    """2 ranks, one run dir; test metrics are those of the whole test set, not of rank 0's half."""
    overrides = [o for o in DDP_QUICK if "limit_test_batches" not in o]
    result = run_cli("train.py", *overrides, f"paths.log_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]

    assert [p.name for p in tmp_path.iterdir()] == ["train"]
    assert [p.name for p in (tmp_path / "train").iterdir()] == ["runs"]
    (run,) = (tmp_path / "train" / "runs").iterdir()
    assert not stray_runs(tmp_path)
    assert (run / "metrics.json").is_file() and (run / "config_tree.txt").is_file()
    rank_files = sorted(p.name for p in (run / RANK_DIR).iterdir())
    assert rank_files == ["config.yaml", "hydra.yaml", "overrides.yaml", "train.log"]
    assert_rank_joined(run)
    # one TensorBoard writer: every event file comes from rank 0's process
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and len({e.name.split(".")[-2] for e in events}) == 1
    # rank 0 alone prints the config tree and the summary line
    assert result.stdout.count("optimized_metric") == 1
    assert len(re.findall(r"^\[mnist-lit\] model=mlp test/acc=", result.stdout, re.M)) == 1

    # each rank tested its 5,000 images; the logged metrics are those of all 10,000
    summary = json.loads((run / "metrics.json").read_text())
    model = LitClassifier.load_from_checkpoint(summary["best_ckpt"], map_location="cpu").eval()
    data = MNISTDataModule(data_dir=str(mnist_data_dir))
    data.setup("test")
    # under the autocast the run tested with (trainer.precision: auto on this CPU)
    bf16 = resolve_precision("auto", "cpu") == "bf16-mixed"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        outputs = [(model(x).float(), y) for x, y in data.test_dataloader()]
    logits, labels = torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])
    assert len(labels) == 10_000
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert summary["metrics"]["test/acc"] == pytest.approx(accuracy, abs=1e-6)
    loss = cross_entropy(logits, labels).item()
    assert summary["metrics"]["test/loss"] == pytest.approx(loss, rel=1e-4)


@pytest.mark.slow
def test_ddp_multirun_jobs_keep_their_ranks(tmp_path: Path, mnist_data_dir: Path) -> None:
    """``-m trainer=ddp seed=1,2``: each job's rank 1 runs that job's config in that job's dir."""
    result = run_cli(
        "train.py", "-m", *DDP_QUICK, "seed=1,2", f"paths.log_dir={tmp_path}", timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]

    assert [p.name for p in (tmp_path / "train").iterdir()] == ["multiruns"]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert not stray_runs(tmp_path)
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job, seed in (("0", 1), ("1", 2)):
        assert json.loads((sweep / job / "metrics.json").read_text())["seed"] == seed
        assert_rank_joined(sweep / job)
    assert "2 of 2 jobs finished" in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_ddp_matches_one_process_accuracy(tmp_path: Path, mnist_data_dir: Path) -> None:
    """2 epochs of the MLP: one process at batch 128 vs 2 DDP ranks at 64 (global batch 128).

    The same global batches and number of steps (see the test above); what differs is batch norm
    (statistics of 64 images per rank, not 128), the dropout masks and the order of float sums.
    Seeds alone move this MLP's test accuracy by about 0.1 point (README, ablation), so 0.5 point
    is the tolerance: far outside that would mean the ranks do not train together.
    """
    common = ["model=mlp", "trainer.max_epochs=2", "callbacks.progress_bar=null"]
    accuracies = {}
    for name, overrides in {
        "single": ["trainer=cpu"],
        "ddp": ["trainer=ddp", "data.batch_size=64"],
    }.items():
        log_dir = tmp_path / name
        result = run_cli("train.py", *common, *overrides, f"paths.log_dir={log_dir}", timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        (run,) = (log_dir / "train" / "runs").iterdir()
        accuracies[name] = json.loads((run / "metrics.json").read_text())["metrics"]["test/acc"]
    assert accuracies["single"] > 0.97
    assert accuracies["ddp"] == pytest.approx(accuracies["single"], abs=0.005), accuracies


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_nodes(commands: list[list[str]], timeout: int) -> list[tuple[int, str]]:
    """Start every command at once, each in its own process group, and wait for all: a node
    that outlives ``timeout`` (or a failed start of another) has its whole group killed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    processes: list[subprocess.Popen[str]] = []
    try:
        for command in commands:
            processes.append(subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, text=True,
                                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                              start_new_session=True))  # fmt: skip
        deadline = time.monotonic() + timeout
        ends = []
        for process in processes:
            _, stderr = process.communicate(timeout=max(1, deadline - time.monotonic()))
            ends.append((process.returncode, stderr))
        return ends
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.slow
def test_ddp_multinode_over_torchrun_matches_one_node(tmp_path: Path, mnist_data_dir: Path) -> None:
    """``trainer=ddp_multinode`` as 2 nodes x 1 process on this machine: two torchrun launchers
    (``--nnodes 2``, node ranks 0 and 1, rendezvous on 127.0.0.1) train one 2-rank job in one run
    dir, to the metrics of ``trainer=ddp``'s 2 processes on one node, to the last digit: the same
    ranks, the same shards, the same all-reduce; only who started the processes differs."""
    quick = [o for o in QUICK if o != "trainer=cpu"] + ["model=mlp"]
    one_node = tmp_path / "one_node"
    one = [sys.executable, str(PROJECT_ROOT / "train.py"), *quick, "trainer=ddp"]
    ((code, stderr),) = run_nodes([[*one, f"hydra.run.dir={one_node}"]], timeout=600)
    assert code == 0, stderr[-3000:]

    two_nodes, port = tmp_path / "two_nodes", free_port()
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
            "--master-addr=127.0.0.1", f"--master-port={port}"]  # fmt: skip
    train = [str(PROJECT_ROOT / "train.py"), *quick, "trainer=ddp_multinode",
             "trainer.accelerator=cpu", "trainer.num_nodes=2", "trainer.devices=1",
             f"hydra.run.dir={two_nodes}"]  # fmt: skip
    ends = run_nodes([[*node, f"--node-rank={rank}", *train] for rank in (0, 1)], timeout=600)
    for rank, (code, stderr) in enumerate(ends):
        assert code == 0, f"node {rank}: {stderr[-3000:]}"

    # both nodes' ranks joined one job: rank 0 and rank 1 of 2, in the one run dir
    logs = "".join(p.read_text() for p in two_nodes.rglob("train.log"))
    assert "rank 0 of 2" in logs and "rank 1 of 2" in logs, logs[-2000:]
    summary = json.loads((two_nodes / "metrics.json").read_text())
    expected = json.loads((one_node / "metrics.json").read_text())
    assert summary["metrics"] == expected["metrics"]
