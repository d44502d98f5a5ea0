"""How many CPU threads a training process uses: its share of the CPUs it may run on, less
the cores other processes keep busy.

Why it matters: torch splits each operation into one piece per thread and waits for the
slowest. When another process holds one of two cores, the thread that shares that core finishes
last at every step, and a two-thread run is many times slower than a one-thread run
(docs/speed.md, "A machine that isn't idle").
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

#: a core counts as taken when other processes keep it at least this busy
TAKEN = 0.5
#: how long the load is read at the start of a fit (this process idle meanwhile)
SAMPLE_SECONDS = 0.2


def cpu_allowance() -> int:
    """The CPUs this process may use: its affinity, capped by a cgroup CPU quota (containers,
    CI runners) and by SLURM's ``--cpus-per-task`` (a job on a shared node)."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    return cpus


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a cgroup quota allows this process (``cpu.max``, cgroup v2; or v1's
    ``cpu.cfs_quota_us``), the smallest along its cgroup's path; None without a quota."""
    quotas: list[float] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: the quota of each cgroup from here to the root applies
            here = root / path.lstrip("/")
            while True:
                quotas += _v2_quota(here / "cpu.max")
                if here == root or root not in here.parents:
                    break
                here = here.parent
        elif "cpu" in controllers.split(","):
            for mount in (controllers, "cpu"):  # cpu,cpuacct/ and its link cpu/
                quotas += _v1_quota(root / mount / path.lstrip("/"))
    return min(quotas) if quotas else None


def _v2_quota(cpu_max: Path) -> list[float]:
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return []
    return [] if quota == "max" else [int(quota) / int(period)]


def _v1_quota(folder: Path) -> list[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []


class CoreLoad:
    """The cores other processes kept busy between two readings: the busy time of the CPUs this
    process may use (``/proc/stat``) less this process's own CPU time."""

    def __init__(self) -> None:
        self.cpus = {f"cpu{n}" for n in os.sched_getaffinity(0)}
        self.last = self._read()

    def _read(self) -> tuple[float, float, float]:
        """Busy and total CPU seconds of our CPUs, and this process's CPU seconds, now."""
        busy = total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        try:
            with open("/proc/stat") as stat:
                for line in stat:
                    name, *fields = line.split()
                    if name not in self.cpus:
                        continue
                    ticks = [int(f) for f in fields[:8]]
                    total += sum(ticks) / tick
                    busy += (sum(ticks) - ticks[3] - ticks[4]) / tick  # less idle and iowait
        except (OSError, ValueError):
            pass
        own = os.times()
        return busy, total, own.user + own.system

    def others(self) -> float:
        """Cores kept busy by other processes since the last call (or since this was made)."""
        busy, total, own = self._read()
        (last_busy, last_total, last_own), self.last = self.last, (busy, total, own)
        if total <= last_total:
            return 0.0
        wall = (total - last_total) / max(1, len(self.cpus))  # seconds that passed on each CPU
        return max(0.0, (busy - last_busy) - (own - last_own)) / wall


def parallel_jobs() -> int:
    """How many jobs the Hydra launcher runs side by side on this machine (``n_jobs``)."""
    if not HydraConfig.initialized():
        return 1
    n_jobs = OmegaConf.select(cast(DictConfig, HydraConfig.get()), "launcher.n_jobs")
    return n_jobs if isinstance(n_jobs, int) and n_jobs > 1 else 1


def cpu_share(trainer: L.Trainer) -> tuple[int, int]:
    """The processes that train side by side on this machine (the jobs a parallel launcher runs,
    times the DDP ranks of each) and each one's share of ``cpu_allowance``, never above an
    ``OMP_NUM_THREADS`` the environment sets (the user's word, or the DDP parent's for its
    ranks)."""
    processes = parallel_jobs() * trainer.num_devices
    share = max(1, cpu_allowance() // processes)
    asked = os.environ.get("OMP_NUM_THREADS", "")
    if asked.isdigit() and int(asked) > 0:
        share = min(share, int(asked))
    return processes, share


def threads_for(share: int, others_busy: float) -> int:
    """The threads for a process whose share of the CPUs is ``share`` while other processes keep
    ``others_busy`` cores busy: the share less each core taken, at least one."""
    taken = math.floor(others_busy + (1 - TAKEN))  # 0.5 of a core busy counts as taken
    return max(1, min(share, len(os.sched_getaffinity(0)) - taken))


class CPUThreads(L.Callback):
    """Sets torch's CPU threads when training starts and, while it trains, follows the load.

    ``threads``: ``auto`` (this process's share of ``cpu_allowance``, less the cores others keep
    busy) or a number. With ``auto``, every ``check_every_n_steps`` the load since the last check
    is read again and the thread count follows it: fewer threads when another process takes a
    core, more when it is gone. A ``deterministic`` trainer keeps the count it started with (a
    different count changes the sums inside BatchNorm and the reductions, so the numbers) and
    says once when fewer threads would be faster; a resumed run takes the count it was
    saved with, so that it ends with the uninterrupted numbers.
    """

    def __init__(
        self,
        threads: int | str = "auto",
        check_every_n_steps: int = 50,
        deterministic: bool = False,
    ) -> None:
        if threads != "auto" and not (isinstance(threads, int) and threads > 0):
            raise ValueError(f"threads must be 'auto' or a positive number, not {threads!r}")
        self.threads = threads
        self.check_every_n_steps = check_every_n_steps
        self.deterministic = deterministic
        self.share = 1
        self.load: CoreLoad | None = None
        self.warned = False
        self.before: int | None = None
        #: the count training ended with (metrics.json's ``threads``)
        self.used: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.accelerator.__class__.__name__ != "CPUAccelerator":
            return
        self.before = torch.get_num_threads()
        processes, self.share = cpu_share(trainer)
        if self.threads != "auto":
            chosen = int(self.threads)
        elif processes > 1:
            # sweep jobs and DDP ranks start together: each other's start is no load
            chosen = self.share
        else:
            self.load = CoreLoad()  # read again every check_every_n_steps from here
            time.sleep(SAMPLE_SECONDS)
            busy = self.load.others()
            chosen = threads_for(self.share, busy)
            if chosen < self.share:
                log.info("other processes keep %.1f cores busy: %d CPU thread(s)", busy, chosen)
        torch.set_num_threads(chosen)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if self.load is None or trainer.global_step % self.check_every_n_steps:
            return
        wanted = threads_for(self.share, self.load.others())
        current = torch.get_num_threads()
        if wanted == current:
            return
        if not self.deterministic:
            log.info("CPU threads %d -> %d: the load of other processes changed", current, wanted)
            torch.set_num_threads(wanted)
        elif wanted < current and not self.warned:
            self.warned = True
            log.warning(
                "other processes keep a core busy, which slows this %d-thread run; the count "
                "stays (deterministic: another count changes the numbers): "
                "callbacks.cpu_threads.threads=%d next time is faster",
                current,
                wanted,
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """The process as it was: a notebook or a benchmark fits again in the same process."""
        if stage == "fit" and self.before is not None:
            self.used = torch.get_num_threads()
            torch.set_num_threads(self.before)
            self.before, self.load = None, None

    def state_dict(self) -> dict[str, Any]:
        return {"threads": torch.get_num_threads()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("threads")
        if self.deterministic and self.threads == "auto" and isinstance(saved, int) and saved > 0:
            torch.set_num_threads(saved)
            self.load = None  # the count the run trained with stays: exact resume
