"""What the project's callbacks cost a training step: Lightning's calls of their hooks, the
hooks' own work, and the share of a step, against "Lightning alone" (make bench's two sides).

1. a short fit of each side (MLP, one thread) times every call of the step hooks each callback
   defines (the median call counts);
2. Lightning's calls of the six step hooks are timed many times on each side's callbacks, their
   work taken out: what the callbacks cost a step just by being in the list (Lightning calls
   every step hook of every callback, empty or not);
3. inside one fit, blocks of steps alternate between the project's callbacks and logger and
   Lightning alone's (channels-last, the model summary, one checkpoint callback, no logger): the
   share as the median difference of a pair of blocks taken a fraction of a second apart, at
   make bench's threads, for the MLP and the CNN (share.py). It counts what 1 and 2 leave out
   (the logger, caches); make bench reports it (a figure, not a check against a target).

``python benchmarks/callback_cost.py [--steps 300] [--calls 20000] [--epochs N] [--block N]
[--batches N] [--repeats N] [--by-place]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from pipelines import PIPELINE_OVERRIDES, compose_config, library_output_to, throughput_overrides
from share import SHARE_RUNS, share_in_fit
from timing import settle_process

from mnist_lit.train import build_model, build_trainer

SIDES = {"lightning": "project's Trainer", "lightning_bare": "Lightning alone"}
#: the hooks Lightning calls on each callback in a training step (automatic optimization)
STEP_HOOKS = (
    "on_train_batch_start",
    "on_before_zero_grad",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_train_batch_end",
)


def call_callback_hook(trainer: L.Trainer, hook: str) -> None:
    """Call ``hook`` on every callback of ``trainer``, as Lightning's loops do.

    Private API, kept here on purpose: ``trainer.call._call_callback_hooks`` is the one function
    Lightning's loops call a callback hook through (the profiler's context, the hook's name on
    each callback), and what part 2 times; no public API calls a hook on the callbacks. A
    Lightning upgrade that changes it breaks this benchmark only (checked with Lightning 2.6).
    """
    from lightning.pytorch.trainer import call

    call._call_callback_hooks(trainer, hook)


def defines(callback: L.Callback, hook: str) -> bool:
    """Whether ``callback``'s class (or one between it and ``Callback``) defines ``hook``."""
    return getattr(type(callback), hook) is not getattr(L.Callback, hook)


def _timed(
    method: Callable[..., Any], name: str, seconds: dict[str, list[float]]
) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds[name].append(time.perf_counter() - started)

    return run


def fit_side(side: str, steps: int, out: Path) -> tuple[L.Trainer, dict[str, list[float]]]:
    """One fit of ``side`` as make bench builds it: the trainer, and the seconds of each call of
    each step hook a callback defines (``Class.hook``)."""
    cfg = compose_config("train", throughput_overrides("mlp", steps, PIPELINE_OVERRIDES[side]), out)
    L.seed_everything(cfg.seed, verbose=False)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, list[float]] = defaultdict(list)
    with library_output_to(out / "library_output.log"):
        datamodule = instantiate(cfg.data)
        trainer = build_trainer(cfg)
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            for hook in STEP_HOOKS:
                if defines(callback, hook):
                    name = f"{type(callback).__name__}.{hook}"
                    setattr(callback, hook, _timed(getattr(callback, hook), name, seconds))
        trainer.fit(build_model(cfg), datamodule=datamodule)
    return trainer, seconds


def _empty(*args: Any, **kwargs: Any) -> None:
    """A hook that does nothing."""


def seconds_calling_step_hooks(trainer: L.Trainer, calls: int) -> float:
    """Lightning's calls of the six step hooks on every one of ``trainer``'s callbacks, the
    hooks' own work taken out (part 1 times it): the seconds of a step's calls."""
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    own = [(c, hook, vars(c).get(hook)) for c in callbacks for hook in STEP_HOOKS]
    for c, hook, _ in own:
        setattr(c, hook, _empty)
    seconds = 0.0
    try:
        for hook in STEP_HOOKS:
            call_callback_hook(trainer, hook)
            started = time.perf_counter()
            for _ in range(calls):
                call_callback_hook(trainer, hook)
            seconds += (time.perf_counter() - started) / calls
    finally:
        for c, hook, before in own:
            if before is None:
                delattr(c, hook)
            else:
                setattr(c, hook, before)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps of each fit (300)")
    parser.add_argument("--calls", type=int, default=20_000, help="timed hook calls (20000)")
    parser.add_argument("--epochs", type=int, help="epochs of part 3's fits (MLP 6, CNN 2)")
    parser.add_argument("--block", type=int, help="steps a block in part 3 (10)")
    parser.add_argument("--batches", type=int, help="batches an epoch in part 3 (all)")
    parser.add_argument("--repeats", type=int, default=1, help="fits a model in part 3 (1)")
    parser.add_argument(
        "--by-place", action="store_true", help="part 3: each side's step at each place in a block"
    )
    args = parser.parse_args(argv)
    settle_process()
    bench_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    call_us, body_us, count = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for side, name in SIDES.items():
            trainer, seconds = fit_side(side, args.steps, Path(tmp) / side)
            steps = trainer.global_step
            call_us[side] = seconds_calling_step_hooks(trainer, args.calls) * 1e6
            # a typical step: the median call, times the calls a step. A hook whose work is
            # one-off (the sample images at the first batch) costs a step what its median does;
            # a hook called once is left out
            typical = {
                hook: statistics.median(times) * len(times) / steps * 1e6
                for hook, times in seconds.items()
                if len(times) > 1
            }
            body_us[side] = sum(typical.values())
            count[side] = len(trainer.callbacks)  # type: ignore[attr-defined]
            names = [type(c).__name__ for c in trainer.callbacks]  # type: ignore[attr-defined]
            print(f"{name}: {count[side]} callbacks in the steps ({', '.join(names)})")
            print(
                f"  {len(STEP_HOOKS) * count[side]} hook calls a step ({len(STEP_HOOKS)} step hooks"
                f" x {count[side]} callbacks, empty or not), calling them: {call_us[side]:.1f} us"
                " a step"
            )
            for hook, us in sorted(typical.items(), key=lambda item: -item[1]):
                print(f"  {us:6.1f} us a step  {hook}")
    extra = count["lightning"] - count["lightning_bare"]
    calls = call_us["lightning"] - call_us["lightning_bare"]
    bodies = body_us["lightning"] - body_us["lightning_bare"]
    print(
        f"the project's {extra} more callbacks: {calls:.0f} us a step for Lightning to call their"
        f" hooks ({calls / extra:.1f} us each) + {bodies:.0f} us of their own work"
        f" = {calls + bodies:.0f} us a step"
    )
    torch.set_num_threads(bench_threads)
    with tempfile.TemporaryDirectory() as tmp:
        for model, run in SHARE_RUNS.items():
            run = run._replace(
                epochs=args.epochs or run.epochs,
                batches=args.batches or run.batches,
                block=args.block or run.block,
            )
            for repeat in range(args.repeats):
                share = share_in_fit(model, run, Path(tmp) / f"{model}_{repeat}")
                print(
                    f"inside one fit ({bench_threads} threads, {run.epochs} epochs):"
                    f" {share.summary()}"
                )
                if args.by_place:
                    for side, steps in share.by_place_ms.items():
                        places = " ".join(f"{ms:6.3f}" for ms in steps)
                        print(f"  {side:>7}'s step (ms) at each place after a switch: {places}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
