"""SLURM and multi-node DDP, in-process, as far as a machine without SLURM or GPUs allows.

The configs compose, the dry run (``python -m mnist_lit.cluster``'s ``main``) prints the sbatch
script whose layout matches the trainer config and the overrides, a bad command line fails in one
line, and Lightning accepts that layout under SLURM's and torchrun's environment variables. A
preempted job stops after its step with a checkpoint and requeues itself
(``cluster.slurm.RequeueOnPreemption``), which only SLURM jobs load.
(The real command lines: tests/integration/test_cluster.py and test_preemption.py.)
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
from hydra.core.global_hydra import GlobalHydra
from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from mnist_lit.cli import SLURM_JOB_FILE
from mnist_lit.cluster import dry_run as cluster
from mnist_lit.cluster import slurm
from mnist_lit.cluster.slurm import PREEMPTION_SIGNALS, RequeueOnPreemption
from mnist_lit.config import PROJECT_ROOT
from mnist_lit.errors import UserError
from mnist_lit.train import build_trainer, train

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
            # the GPU config, built as train.py builds it, on the CPU (this machine has no GPU)
            trainer = build_trainer(cfg, accelerator="cpu", deterministic=False)
            cluster_env = trainer.strategy.cluster_environment
            assert isinstance(cluster_env, environment)
            assert (trainer.num_nodes, trainer.num_devices, trainer.world_size) == (2, 4, 8)
            assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (5, 1, 1)
            cluster_env.validate_settings(num_devices=4, num_nodes=2)  # what fit() checks first
            assert any(isinstance(c, RequeueOnPreemption) for c in trainer.callbacks)


# ----------------------------------------------------------------------------- preemption


def test_every_job_of_the_slurm_launcher_stops_and_requeues_when_preempted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = dry_run(capsys, "seed=1,2")
    assert sbatch_flags(out)["signal"] == "USR2@120"
    assert "# ---- preemption: SLURM signals USR2 120 s before a preemption or the time" in out
    assert f"# (callbacks.slurm_requeue: {cluster.REQUEUE_CALLBACK})\n" in out
    assert f"{slurm.__name__}.{RequeueOnPreemption.__qualname__}" == cluster.REQUEUE_CALLBACK

    out = dry_run(capsys, "seed=1,2", "callbacks.slurm_requeue=null")
    assert "# jobs [0, 1] have no mnist_lit.cluster.slurm.RequeueOnPreemption callback" in out


def _targets(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [str(v) for k, v in node.items() if k == "_target_"] + [
            t for v in node.values() for t in _targets(v)
        ]
    return [t for v in node for t in _targets(v)] if isinstance(node, list) else []


@pytest.mark.parametrize(
    "overrides",
    [[], ["hydra/launcher=parallel"], ["hparams_search=optuna"], ["experiment=ablation"]],
)
def test_runs_outside_slurm_load_nothing_of_the_cluster_extra(
    overrides: list[str], tmp_path: Path
) -> None:
    cfg = compose_config("train", overrides, tmp_path / "run")
    targets = _targets(OmegaConf.to_container(cfg, resolve=False))
    assert targets and not [t for t in targets if t.startswith("mnist_lit.cluster")]


def test_a_trainer_outside_slurm_imports_no_cluster_module(
    train_cfg, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [m for m in sys.modules if m.startswith("mnist_lit.cluster")]:
        monkeypatch.delitem(sys.modules, name)
    build_trainer(train_cfg())
    assert not [m for m in sys.modules if m.startswith("mnist_lit.cluster")]


def test_your_own_sbatch_script_adds_the_callback_by_name(tmp_path: Path) -> None:
    cfg = compose_config("train", ["callbacks=[default,slurm_requeue]"], tmp_path / "run")
    assert cfg.callbacks.slurm_requeue._target_ == cluster.REQUEUE_CALLBACK
    assert "resume_checkpoint" in cfg.callbacks  # the checkpoint it stops with


@pytest.fixture
def signals() -> Iterator[None]:
    """The handlers of SIGTERM and the preemption signals, put back after the test."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, *PREEMPTION_SIGNALS)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


@pytest.fixture
def under_slurm(monkeypatch: pytest.MonkeyPatch, signals: None) -> dict[str, list]:
    """Array task 3 of SLURM job 7. Stood in for: ``scontrol`` (``ran``: the commands it was
    given) and ``atexit`` (``at_exit``: what was to run when the process ends)."""
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    calls: dict[str, list] = {"ran": [], "at_exit": []}

    def scontrol(command: list[str], **_: object) -> SimpleNamespace:
        calls["ran"].append(command)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    monkeypatch.setattr(slurm.subprocess, "run", scontrol)
    monkeypatch.setattr(slurm.atexit, "register", lambda *call: calls["at_exit"].append(call))
    return calls


def _stand_in_trainer(rank: int = 0) -> Any:
    return SimpleNamespace(global_rank=rank, default_root_dir="/runs/7_3")


def test_outside_slurm_the_preemption_signals_are_left_alone(signals: None) -> None:
    before = [signal.getsignal(s) for s in PREEMPTION_SIGNALS]
    callback = RequeueOnPreemption()
    callback.setup(_stand_in_trainer(), None, "fit")  # type: ignore[arg-type]
    assert [signal.getsignal(s) for s in PREEMPTION_SIGNALS] == before
    callback.on_exception(_stand_in_trainer(), None, SystemExit(1))  # type: ignore[arg-type]


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_a_preempted_slurm_job_stops_as_sigterm_does_and_requeues_at_exit(
    signum: signal.Signals, under_slurm: dict[str, list], capsys: pytest.CaptureFixture[str]
) -> None:
    before = [signal.getsignal(s) for s in PREEMPTION_SIGNALS]
    terms: list[int] = []
    signal.signal(signal.SIGTERM, lambda s, f: terms.append(s))  # Lightning's, in a real run
    callback = RequeueOnPreemption()
    callback.setup(_stand_in_trainer(), None, "fit")  # type: ignore[arg-type]
    os.kill(os.getpid(), signum)
    os.kill(os.getpid(), signum)  # SLURM may signal again: one stop
    assert terms == [signal.SIGTERM] and callback.preempted == signum
    callback.on_exception(_stand_in_trainer(), None, SystemExit(1))  # type: ignore[arg-type]
    assert [signal.getsignal(s) for s in PREEMPTION_SIGNALS] == before
    assert under_slurm["ran"] == []  # not yet: the process still writes its checkpoint
    ((requeue, *arguments),) = under_slurm["at_exit"]
    requeue(*arguments)
    assert under_slurm["ran"] == [["scontrol", "requeue", "7_3"]]
    err = capsys.readouterr().err
    assert err == (
        f"[mnist-lit] preempted by SLURM ({signum.name}): requeued job 7_3, which resumes in"
        " /runs/7_3\n"
    )


def test_only_rank_0_requeues(under_slurm: dict[str, list]) -> None:
    signal.signal(signal.SIGTERM, lambda s, f: None)
    callback = RequeueOnPreemption()
    callback.setup(_stand_in_trainer(rank=1), None, "fit")  # type: ignore[arg-type]
    os.kill(os.getpid(), signal.SIGUSR2)
    callback.on_exception(_stand_in_trainer(rank=1), None, SystemExit(1))  # type: ignore[arg-type]
    assert callback.preempted == signal.SIGUSR2 and under_slurm["at_exit"] == []


def test_a_failed_requeue_says_how_to_resume(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def missing(command: list[str], **_: object) -> None:
        raise FileNotFoundError(2, "No such file or directory", "scontrol")

    monkeypatch.setattr(slurm.subprocess, "run", missing)
    slurm.requeue("7_3", signal.SIGUSR1, "/runs/7_3")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`scontrol requeue 7_3` failed" in err
    assert err.rstrip().endswith("resume with python train.py resume=/runs/7_3")


class SignalAtStep(L.Callback):
    """Sends this process ``signum`` once training reaches ``step``, as SLURM would."""

    def __init__(self, step: int, signum: int) -> None:
        self.step, self.signum, self.sent = step, signum, False

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def test_a_preempted_run_stops_after_its_step_with_a_checkpoint(
    train_cfg, under_slurm: dict[str, list], capsys: pytest.CaptureFixture[str]
) -> None:
    """train.py's work, preempted at step 3 (SIGUSR2, submitit's): it stops there as on SIGTERM,
    with the checkpoint a resume needs, and leaves the requeue for when the process ends."""
    preempt = f"{{_target_: {__name__}.SignalAtStep, step: 3, signum: {int(signal.SIGUSR2)}}}"
    cfg = train_cfg("callbacks=[default,slurm_requeue]", f"+callbacks.preempt={preempt}")
    with pytest.raises(UserError) as caught:
        train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert caught.value.exit_code == 128 + signal.SIGTERM
    assert str(caught.value).startswith("stopped by SIGTERM at step 3: ")
    assert (run_dir / "checkpoints" / "resume" / "step_0000003.ckpt").is_file()
    assert (run_dir / SLURM_JOB_FILE).read_text() == "7_3"  # how the requeued job finds its run
    assert not (run_dir / "metrics.json").exists()
    assert [call[1:] for call in under_slurm["at_exit"]] == [("7_3", signal.SIGUSR2, str(run_dir))]
