"""Callbacks that shape a training run: stop at a target, channels-last weights, exact resume,
checkpoints every N steps, the start-up time a benchmark reads; and the Trainer's checkpoint
writer (a plugin, not a callback, but plugged into the Trainer from the config the same way)."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn

from mnist_lit.errors import atomic_write_bytes


class StopAtTarget(L.Callback):
    """Stops training once ``monitor`` reaches ``target``; logs what it took to get there.

    ``time_to_target/seconds`` counts training only (validation runs are excluded), from the
    start of ``fit``; ``time_to_target/epochs`` is in epochs of training data (0.5 = half an
    epoch). Check validation more often than once an epoch to stop sooner, e.g.
    ``trainer.val_check_interval=0.25``. ``target: null`` turns it off. (Lightning's
    ``EarlyStopping(stopping_threshold=...)`` stops too, but measures nothing.)
    """

    def __init__(self, target: float | None = None, monitor: str = "val/acc") -> None:
        if target is not None and not 0 < target <= 1:
            raise ValueError(f"stop_at={target} must be an accuracy in (0, 1], e.g. 0.99")
        self.target, self.monitor = target, monitor
        self.reached = False
        self._train_seconds = 0.0
        self._since: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._since = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._since is not None:  # pause the training clock
            self._train_seconds += time.perf_counter() - self._since
            self._since = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if self.target is not None and not self.reached and value is not None:
            self.reached = float(value) >= self.target
            if self.reached:
                trainer.should_stop = True
                self._record(trainer)
        self._since = time.perf_counter()

    def _record(self, trainer: L.Trainer) -> None:
        found = {
            "time_to_target/seconds": self._train_seconds,
            "time_to_target/epochs": trainer.global_step / trainer.num_training_batches,
            "time_to_target/steps": float(trainer.global_step),
        }
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in found.items()})
        for logger in trainer.loggers:
            logger.log_metrics(found, step=trainer.global_step)


class StartupTime(L.Callback):
    """Measures ``seconds`` from the process's launch to its first training step and logs it as
    ``time/startup_seconds`` (``train.py`` writes it into ``metrics.json``).

    Not in the default list: ``make bench`` adds it (``callbacks=[default,startup_time]``). It
    asks psutil (a ``dev`` dependency) when the process was launched.
    """

    def __init__(self) -> None:
        import psutil

        self.launched = psutil.Process().create_time()
        self.seconds: float | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.seconds is None:
            self.seconds = time.time() - self.launched
            for logger in trainer.loggers:
                logger.log_metrics({"time/startup_seconds": self.seconds}, step=trainer.global_step)


class ChannelsLast(L.Callback):
    """Puts the network's weights in channels-last layout, which conv kernels prefer: on GPUs,
    and on CPUs through oneDNN too (docs/speed.md).

    In ``setup``, the first hook of a fit or test: before DDP wraps the model and before the
    optimizer, or a checkpoint being resumed, sees the weights, so all of them get this layout.
    (Inputs need nothing: an image batch with one channel is channels-last already.)
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)


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
        stateful: list[Any] = [
            loader
            for loader in (loaders if isinstance(loaders, (list, tuple)) else [loaders])
            if hasattr(loader, "load_state_dict")
        ]
        for loader, state in zip(stateful, self._loader_states, strict=False):
            loader.load_state_dict(state)
        self._loader_states = []


class StepCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` every N training steps, except on a batch that validation
    follows (an epoch's last, or each ``val_check_interval``).

    Lightning resumes a checkpoint saved on such a batch as if that validation had run (it was
    saved before it), so a run killed during the validation would skip it: ``val/acc_best`` and
    the tested checkpoint would differ from an uninterrupted run's. Without it, the resumed run
    goes on from the checkpoint before, or from ``last.ckpt`` saved after the validation.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        done = idx + 1
        every = trainer.val_check_batch
        validates = done == trainer.num_training_batches or (
            isinstance(every, int) and every > 0 and done % every == 0
        )
        if not (validates and trainer.enable_validation):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, idx)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO for one run dir, ``run_dir``, with three differences:

    - a checkpoint is written to a temporary file beside it and renamed (Lightning's moves one
      from /tmp: a copy, that a kill can cut short);
    - it is read weights-only, whatever the caller asks (a checkpoint is data, never code);
    - every path it carries in a callback's state (``ModelCheckpoint``'s best, last and top-k
      files, its ``dirpath``) is taken as relative to the ``checkpoints/`` folder it was saved
      in and re-rooted in this run's, or dropped when it would leave this run dir. Lightning
      restores those paths as they are and later removes the "stale" files they name: a crafted
      checkpoint must not name yours. A moved or copied run dir so finds its own files.

    Lightning's removal of a stale checkpoint removes only a file inside ``run_dir``.
    """

    def __init__(self, run_dir: str) -> None:
        super().__init__()
        self.run_dir = Path(run_dir).resolve()

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        where = {} if map_location is None else {"map_location": map_location}
        checkpoint = super().load_checkpoint(path, weights_only=True, **where)
        states = checkpoint.get("callbacks")
        if isinstance(states, dict):
            checkpoint["callbacks"] = {key: self.inside(state) for key, state in states.items()}
        return checkpoint

    def inside(self, value: Any, exists: bool = True) -> Any:
        """``value`` with each path in it re-rooted in this run's checkpoints, at any depth (a
        path: a string that is absolute or names a .ckpt). One that would leave the run dir, or
        names no file there (but a ``dirpath``), becomes ``""``, or is left out as a key."""
        if isinstance(value, dict):
            kept = {
                self.inside(key): self.inside(item, exists=key != "dirpath")
                for key, item in value.items()
            }
            return {key: item for key, item in kept.items() if key != ""}
        if not isinstance(value, str) or not (value.startswith("/") or value.endswith(".ckpt")):
            return value
        parts = Path(value).parts
        if "checkpoints" not in parts:
            return ""
        last = len(parts) - 1 - parts[::-1].index("checkpoints")
        rerooted = (self.run_dir / "checkpoints").joinpath(*parts[last + 1 :]).resolve()
        inside = rerooted.is_relative_to(self.run_dir) and (rerooted.is_file() or not exists)
        return str(rerooted) if inside else ""

    def remove_checkpoint(self, path: Any) -> None:
        target = Path(path).resolve()
        if target.is_relative_to(self.run_dir) and target.is_file():
            target.unlink()
