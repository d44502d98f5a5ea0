"""The thread policy: the CPUs a process may use, the cores others take, and what a run does
when the load changes. No timing: each check is on the counts the policy picks."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import torch

from mnist_lit.callbacks import cpu_threads
from mnist_lit.callbacks.cpu_threads import CPUThreads, cgroup_cpu_quota, cpu_allowance, threads_for

CPUS = len(os.sched_getaffinity(0))


@pytest.fixture(autouse=True)
def _keep_threads():
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


def _cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, membership: str) -> Path:
    """A fake cgroup tree under tmp_path, and /proc/self/cgroup saying ``membership``."""
    real_read_text = Path.read_text

    def read_text(self: Path, *args, **kwargs) -> str:
        if str(self) == "/proc/self/cgroup":
            return membership
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    return tmp_path


def test_a_cgroup_v2_quota_is_the_smallest_on_the_way_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _cgroup(tmp_path, monkeypatch, "0::/ci/job\n")
    (root / "ci" / "job").mkdir(parents=True)
    (root / "cpu.max").write_text("max 100000\n")
    (root / "ci" / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs for all of ci
    (root / "ci" / "job" / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(root) == 1.5


def test_a_cgroup_v1_quota_and_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _cgroup(tmp_path, monkeypatch, "4:cpu,cpuacct:/docker/abc\n2:memory:/docker/abc\n")
    folder = root / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(root) == 3.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert cgroup_cpu_quota(root) is None


def test_the_allowance_follows_affinity_quota_and_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_quota", lambda: None)
    assert cpu_allowance() == CPUS
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_quota", lambda: 0.3)
    assert cpu_allowance() == 1  # a fraction of a CPU is still one thread
    monkeypatch.setattr(cpu_threads, "cgroup_cpu_quota", lambda: None)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cpu_allowance() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "")  # set but empty: ignored
    assert cpu_allowance() == CPUS


class _Devices:
    num_devices = 1


def test_omp_num_threads_caps_the_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_threads, "cpu_allowance", lambda: 4)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cpu_threads.cpu_share(_Devices()) == (1, 4)  # type: ignore[arg-type]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # make robust's one thread
    assert cpu_threads.cpu_share(_Devices()) == (1, 1)  # type: ignore[arg-type]
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # more than the allowance: the allowance
    assert cpu_threads.cpu_share(_Devices()) == (1, 4)  # type: ignore[arg-type]
    monkeypatch.setenv("OMP_NUM_THREADS", "")  # set but empty: ignored
    assert cpu_threads.cpu_share(_Devices()) == (1, 4)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("share", "busy", "expected"),
    [(2, 0.0, 2), (2, 0.3, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 2.0, 1), (1, 0.0, 1)],
)
def test_each_core_others_take_costs_a_thread(share: int, busy: float, expected: int) -> None:
    if CPUS < 2:
        pytest.skip("needs 2 CPUs")
    assert threads_for(share, busy) == min(expected, CPUS)


class _FakeLoad:
    def __init__(self, busy: float) -> None:
        self.busy = busy

    def others(self) -> float:
        return self.busy


class _Trainer:
    global_step = 50


def test_a_free_run_follows_the_load_and_a_deterministic_one_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    if CPUS < 2:
        pytest.skip("needs 2 CPUs")
    free = CPUThreads(deterministic=False)
    free.share, free.load = 2, _FakeLoad(1.0)
    torch.set_num_threads(2)
    free.on_train_batch_end(_Trainer())  # type: ignore[arg-type]
    assert torch.get_num_threads() == 1
    free.load = _FakeLoad(0.0)  # the other process ended
    free.on_train_batch_end(_Trainer())  # type: ignore[arg-type]
    assert torch.get_num_threads() == 2

    fixed = CPUThreads(deterministic=True)
    fixed.share, fixed.load = 2, _FakeLoad(1.0)
    with caplog.at_level(logging.WARNING):
        fixed.on_train_batch_end(_Trainer())  # type: ignore[arg-type]
        fixed.on_train_batch_end(_Trainer())  # type: ignore[arg-type]
    assert torch.get_num_threads() == 2
    warned = [r for r in caplog.records if "callbacks.cpu_threads.threads=1" in r.getMessage()]
    assert len(warned) == 1  # once


def test_a_resumed_deterministic_run_takes_its_saved_count() -> None:
    torch.set_num_threads(1)
    state = CPUThreads(deterministic=True).state_dict()
    assert state == {"threads": 1}
    torch.set_num_threads(CPUS)
    resumed = CPUThreads(deterministic=True)
    resumed.load = _FakeLoad(0.0)
    resumed.load_state_dict(state)
    assert torch.get_num_threads() == 1 and resumed.load is None  # and it stays
    CPUThreads(deterministic=False).load_state_dict({"threads": CPUS})  # follows the load instead
    assert torch.get_num_threads() == 1


@pytest.mark.parametrize("threads", [0, -1, "many", 1.5])
def test_a_bad_count_is_refused(threads: object) -> None:
    with pytest.raises(ValueError, match="threads"):
        CPUThreads(threads=threads)  # type: ignore[arg-type]
