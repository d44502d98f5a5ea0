"""Callbacks with nothing left to do in a run leave its trainer.

Lightning calls every hook of every callback in ``trainer.callbacks``, six of them each training
step, whether the callback does anything then or not (what that costs: docs/speed.md,
``benchmarks/callback_cost.py``).
"""

from __future__ import annotations

import lightning as L


def leave_trainer(trainer: L.Trainer, callback: L.Callback) -> None:
    """Takes ``callback`` out of ``trainer.callbacks`` for the rest of the run.

    Only for callbacks that keep no state in checkpoints (Lightning saves the state of the
    callbacks in the list). A new list, not ``list.remove``: Lightning may be going through the
    one it has, calling a hook on each callback.
    """
    kept = [other for other in trainer.callbacks if other is not callback]  # type: ignore[attr-defined]
    trainer.callbacks = kept  # type: ignore[attr-defined]  # set by Lightning at build time
