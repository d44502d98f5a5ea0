"""``logger=wandb``: Lightning's ``WandbLogger`` that keeps one W&B run per run dir.

The run's W&B id and group are kept in ``<run dir>/trackers.json``, so ``resume=`` goes on with
the same W&B run; a sweep's jobs are grouped under the sweep dir's name. Everything that writes
runs on rank 0 only. wandb is imported only once the run starts.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from pydantic import Field

from mnist_lit.compat import wandb_history_rows
from mnist_lit.errors import require_extra
from mnist_lit.schema import Options
from mnist_lit.trackers.run import TrackedRun, check_arguments, not_logged_yet, tracked_run


class WandbArguments(Options):
    """``conf/logger/wandb.yaml``; any other key goes to ``wandb.init``
    (``+logger.wandb.notes=...``), which checks it."""

    project: str | None = None
    entity: str | None = None
    offline: bool = False
    save_dir: str
    name: str | None = None
    group: str | None = None
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    job_type: str | None = None
    log_model: bool | Literal["all"] = False
    prefix: str = ""
    run_dir: str
    log_dir: str | None = None
    ckpt_path: str | None = None


class TrackedWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` for one run dir: named by where it is in ``paths.log_dir``
    (a sweep's job: ``<sweep name>/<job number>``, in the sweep's group), with the run's tags
    and composed config; a resumed run goes on with the stopped run's W&B run (same id and
    group) and skips the steps that W&B's files of it hold. The run's last finalize finishes the
    W&B run, so the next job of a sweep in this process starts its own.

    ``run_dir``, ``log_dir``, ``run_tags`` and ``ckpt_path``: the run's dir, ``paths.log_dir``,
    its ``tags`` and the checkpoint it resumes from (``conf/logger/wandb.yaml`` interpolates them).

    The W&B run is started here, with ``wandb.init``, and Lightning takes it as the run in
    progress: two of the arguments Lightning always gives ``wandb.init`` draw a warning on every
    run, ``anonymous=None`` (W&B takes any value as set: "has no effect") and, offline,
    ``resume="allow"`` ("will be ignored": an offline run with the same id is written anew, and
    ``wandb sync`` adds it to that run).
    """

    def __init__(
        self,
        save_dir: str | Path = ".",
        name: str | None = None,
        group: str | None = None,
        tags: Any = None,
        run_dir: str | Path = ".",
        log_dir: str | Path | None = None,
        run_tags: Any = None,
        ckpt_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        require_extra("trackers", "wandb")
        more_tags = [str(tag) for tag in tags or []]
        given = {
            "save_dir": str(save_dir),
            "name": name,
            "group": group,
            "tags": more_tags,
            "run_dir": str(run_dir),
            "log_dir": None if log_dir is None else str(log_dir),
            "ckpt_path": ckpt_path,
            **kwargs,
        }
        check_arguments("logger.wandb", WandbArguments, given)
        self.tracked: TrackedRun = tracked_run(run_dir, run_tags, ckpt_path, log_dir)
        saved = self.tracked.saved_ids("wandb")
        if saved.get("id"):  # W&B picks the id of a new run
            kwargs["id"], group = saved["id"], saved.get("group")
        else:
            group = group or self.tracked.sweep_name
        init_arguments = {
            "name": name or self.tracked.name,
            "group": group,
            "tags": [*self.tracked.tags, *more_tags],
            "config": self.tracked.config,
            **kwargs,
        }
        super().__init__(save_dir=save_dir, **init_arguments)
        offline = bool(kwargs.get("offline"))
        #: what ``wandb.init`` is given: Lightning's arguments less ``anonymous``, and ``resume``
        #: online only
        self.init_arguments: dict[str, Any] = {
            "project": self.name,  # Lightning's default project if none was given
            "dir": self.save_dir,
            "id": self.version,
            "mode": "offline" if offline else None,
            "resume": None if offline else "allow",
            **{k: v for k, v in init_arguments.items() if k not in NOT_FOR_INIT},
        }
        self.group = group
        self.logged_steps: dict[str, int] = {}
        if saved.get("id"):
            self.logged_steps = wandb_logged_steps(Path(save_dir), saved["id"])
        self._started = False
        self._finished = False

    @property
    def experiment(self) -> Any:
        """W&B's run; the first use on rank 0 starts it and keeps its id in the run dir."""
        if self._started or rank_zero_only.rank != 0:  # type: ignore[attr-defined]
            return super().experiment
        self._started = True
        import wandb

        if wandb.run is not None:  # a run the user started: Lightning takes it, and says so
            started = super().experiment
        else:
            run = wandb.init(**self.init_arguments)
            # the x-axis Lightning gives a run it starts
            run.define_metric("trainer/global_step")
            run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
            with warnings.catch_warnings():  # Lightning takes the run in progress: ours
                warnings.filterwarnings("ignore", "There is a wandb run already in progress")
                started = super().experiment
        self.tracked.remember_ids("wandb", {"id": started.id, "group": self.group})
        return started

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        new = not_logged_yet(metrics, step, self.logged_steps)
        if new:
            super().log_metrics(new, step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Finish the W&B run at the run's end (``metrics.json`` written) or when it stops."""
        super().finalize(status)
        if self._experiment is None or self._finished:
            return
        if status == "success" and self.tracked.new_results() is None:
            return  # the end of fit or test: the run goes on
        self._finished = True
        self._experiment.finish(exit_code=0 if status in ("success", "finished") else 1)


#: ``WandbLogger``'s arguments that ``init_arguments`` does not pass on as they are: Lightning's
#: own, and ``anonymous`` (no effect in W&B, only its warning)
NOT_FOR_INIT = (
    "offline", "log_model", "prefix", "checkpoint_name", "add_file_policy", "experiment",
    "id", "version", "dir", "anonymous",
)  # fmt: skip


def wandb_logged_steps(save_dir: Path, run_id: str) -> dict[str, int]:
    """The last step each metric was logged at in W&B's files of run ``run_id`` under
    ``save_dir/wandb`` (offline, or online: both keep one), read with W&B's own reader.

    Why the files: W&B's service writes them in blocks, so a run that was killed (SIGKILL) holds
    less there than it logged; what is there is what W&B has (``compat.wandb_history_rows``).
    """
    steps: dict[str, int] = {}
    for path in sorted((save_dir / "wandb").glob(f"*-{run_id}/run-{run_id}.wandb")):
        for row in wandb_history_rows(path):
            step = json.loads(row.pop("trainer/global_step", "null"))
            for key in row:
                if step is not None and not key.startswith("_"):
                    steps[key] = max(step, steps.get(key, -1))
    return steps
