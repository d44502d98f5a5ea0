"""Runs that survive being killed: atomic checkpoints, the RNG in them, and ``resume=<run dir>``.

A run killed at any moment (SIGKILL mid-epoch included) goes on from its newest intact
checkpoint with ``python train.py resume=<run dir>`` (or ``resume=last``): same config, same run
dir, same TensorBoard run, and on the CPU the same final numbers as a run never stopped. What
makes that exact:

- ``conf/callbacks/resume_checkpoint.yaml`` saves every N training steps (two kept), besides
  the best and ``last.ckpt`` per epoch; checkpoints hold Lightning's loop state;
- the training batches are resumable (``InMemoryBatches.state_dict``): the resumed epoch skips
  the batches already trained on, and the metrics that average over an epoch are saved too;
- ``ExactResume`` restores the random state that dropout draws from, and the batch position;
- ``AtomicCheckpointIO`` writes each checkpoint to a temporary file and renames it, so a kill
  never leaves half a checkpoint under a real name; and a checkpoint that is damaged anyway
  (a full disk, a copy cut short) is skipped for the one before it.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from mnist_lit.files import atomic_write_bytes

log = logging.getLogger(__name__)


class ResumeError(ValueError):
    """A run that cannot be resumed; the message is one line with the fix."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, but temp-file-and-rename in the checkpoint's own folder.

    (Lightning's own writer goes through a temporary file in the system temp dir and then
    *moves* it, which is a copy when /tmp is another file system: a kill during it leaves a
    truncated checkpoint.)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


class ExactResume(L.Callback):
    """Restores what Lightning's own resume leaves out, at the start of training.

    - torch's random state (dropout masks), saved in every checkpoint;
    - the position of the training batches in the interrupted epoch. Lightning saves it
      (``InMemoryBatches.state_dict``) but does not load it back when ``configure_optimizers``
      has asked for ``trainer.estimated_stepping_batches`` (as the one-cycle schedule does): that
      builds the train loader before the checkpoint's loop state is read.

    Both are applied in ``on_train_start``, after the sanity-check validation and before the
    first batch is drawn. (The batch order and augmentation have their own seeded generators.)
    """

    def __init__(self) -> None:
        self._rng: dict[str, Any] | None = None
        self._loader_states: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng = state_dict

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._loader_states = fit_loop.get("state_dict", {}).get("combined_loader", [])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng is not None:
            torch.set_rng_state(self._rng["torch"])
            if "cuda" in self._rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._rng["cuda"])
            self._rng = None
        loaders = trainer.train_dataloader
        stateful = [
            loader
            for loader in (loaders if isinstance(loaders, (list, tuple)) else [loaders])
            if hasattr(loader, "load_state_dict")
        ]
        for loader, state in zip(stateful, self._loader_states, strict=False):
            loader.load_state_dict(state)
        self._loader_states = []


def newest_intact_checkpoint(run_dir: Path) -> Path:
    """The most recently written checkpoint of a run that loads; damaged ones are skipped."""
    from mnist_lit.checkpoints import checkpoint_problem  # imports the model code: only here

    found = sorted(
        (run_dir / "checkpoints").rglob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for path in found:
        problem = checkpoint_problem(path, resume=True)
        if problem is None:
            return path
        log.warning("not resuming from %s: %s; trying the one before", path, problem)
    if found:
        raise ResumeError(f"no checkpoint in {run_dir / 'checkpoints'} loads: start a new run")
    raise ResumeError(
        f"{run_dir} has no checkpoint to resume from (it stopped before its first one): "
        "start a new run"
    )


def latest_run_dir(runs_root: Path) -> Path:
    """The newest single-run dir (``logs/train/runs/<time>``), for ``resume=last``."""
    runs = sorted(p for p in runs_root.glob("*") if (p / ".hydra" / "overrides.yaml").is_file())
    if not runs:
        raise ResumeError(f"resume=last found no run under {runs_root}: pass resume=<run dir>")
    return runs[-1]


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_command_line(argv: Sequence[str], runs_root: Path) -> list[str]:
    """Rewrite ``resume=<dir> [overrides]`` into the original run's overrides, pinned to its dir.

    The original run's own overrides (``<dir>/.hydra/overrides.yaml``) come first, then any
    given here (e.g. a higher ``trainer.max_epochs``), then ``hydra.run.dir=<dir>`` and
    ``ckpt_path=<its newest intact checkpoint>``. Other arguments pass through unchanged.
    """
    given = [a for a in argv if _key(a) == "resume"]
    if not given:
        return list(argv)
    if "-m" in argv or "--multirun" in argv:
        raise ResumeError("resume= resumes one run: resume each job of a sweep by its dir")
    where = given[-1].split("=", 1)[1]
    run_dir = latest_run_dir(runs_root) if where == "last" else Path(where).expanduser()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        raise ResumeError(
            f"resume={where}: {run_dir} is not a run dir (no .hydra/overrides.yaml): pass "
            "resume=logs/train/runs/<time> or resume=logs/train/multiruns/<time>/<job>"
        )
    original = yaml.safe_load(overrides_file.read_text()) or []
    extra = [a for a in argv if _key(a) != "resume"]
    replaced = {_key(a) for a in extra if "=" in a} | {"ckpt_path", "hydra.run.dir"}
    kept = [o for o in original if _key(o) not in replaced]
    checkpoint = newest_intact_checkpoint(run_dir)
    return [
        *kept,
        *extra,
        f"hydra.run.dir={run_dir.resolve()}",
        f"ckpt_path={checkpoint.resolve()}",
    ]


def checkpoint_step(ckpt_path: str | Path) -> int:
    """The training step a checkpoint was saved at (what TensorBoard events after it repeat)."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    return int(checkpoint.get("global_step", 0))
