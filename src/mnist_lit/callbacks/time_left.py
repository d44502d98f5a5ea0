"""``TimeLeft``: how long the whole fit has left, printed as it trains (``make robust`` and
``make serve`` add it: ``callbacks=[default,time_left]``)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


def duration(seconds: float) -> str:
    """``seconds`` as a person reads it: ``45 s``, ``3 min 20 s``, ``1 h 05 min``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class TimeLeft(L.Callback):
    """Prints the time the fit has left, from the time its steps have taken so far on this
    machine (validation included): once ``first_after_steps`` steps are done, then every
    ``every_seconds``. Nothing for a fit without a known length (``max_epochs=-1``).
    """

    def __init__(self, every_seconds: float = 60.0, first_after_steps: int = 20) -> None:
        self.every_seconds = every_seconds
        self.first_after_steps = first_after_steps
        self._started = 0.0
        self._first_step = 0
        self._printed: float | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resumed fit counts from where it resumed: the steps before took no time here
        self._started, self._first_step = time.perf_counter(), trainer.global_step
        self._printed = None

    @rank_zero_only
    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        done = trainer.global_step - self._first_step
        now = time.perf_counter()
        if done < self.first_after_steps:
            return
        if self._printed is not None and now - self._printed < self.every_seconds:
            return
        total = trainer.estimated_stepping_batches
        if total == float("inf"):
            return
        per_step = (now - self._started) / done
        left = per_step * (total - trainer.global_step)
        first = self._printed is None
        self._printed = now
        print(
            f"[mnist-lit] step {trainer.global_step:,}/{int(total):,}: about {duration(left)} "
            f"left ({per_step:.2f} s a step here"
            + (f", {duration(per_step * total)} for the whole fit)" if first else ")"),
            flush=True,
        )
