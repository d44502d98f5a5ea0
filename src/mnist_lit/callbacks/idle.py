"""Callbacks cost a step only for what they do.

Lightning calls every hook of every callback in ``trainer.callbacks``, six of them each training
step, whether the callback does anything then or not (what that costs: docs/speed.md,
``benchmarks/callback_cost.py``). So:

- the batch hooks a callback leaves as ``Callback``'s empty ones are not called at all
  (``skip_empty_batch_hooks``, for every trainer the project builds);
- a callback with nothing left to do in a run leaves the trainer (``leave_trainer``).
"""

from __future__ import annotations

from collections.abc import Iterable

import lightning as L

from mnist_lit import compat

#: the hooks Lightning calls on each callback in a training step (automatic optimization)
STEP_HOOKS = (
    "on_train_batch_start",
    "on_before_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
)
#: the hooks Lightning calls on each callback once per batch (training, evaluation, prediction)
BATCH_HOOKS = (
    *STEP_HOOKS,
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
    "on_predict_batch_start",
    "on_predict_batch_end",
)


def skip_empty_batch_hooks(callbacks: Iterable[L.Callback]) -> None:
    """Lightning stops calling the batch hooks that each callback leaves empty.

    A hook counts as defined when the callback's class (or a class between it and ``Callback``)
    defines it, or the instance has its own: those are called as before.
    """
    for callback in callbacks:
        for hook in BATCH_HOOKS:
            if hook not in vars(callback) and getattr(type(callback), hook) is getattr(
                L.Callback, hook
            ):
                compat.skip_callback_hook(callback, hook)


def leave_trainer(trainer: L.Trainer, callback: L.Callback) -> None:
    """Takes ``callback`` out of ``trainer.callbacks`` for the rest of the run.

    Only for callbacks that keep no state in checkpoints (Lightning saves the state of the
    callbacks in the list). A new list, not ``list.remove``: Lightning may be going through the
    one it has, calling a hook on each callback.
    """
    kept = [other for other in trainer.callbacks if other is not callback]  # type: ignore[attr-defined]
    trainer.callbacks = kept  # type: ignore[attr-defined]  # set by Lightning at build time
