"""What the project's callbacks cost a training step: Lightning's calls of their hooks, the
hooks' own work, and the share of a step, against "Lightning alone" (make bench's two sides).

1. a short fit of each side (MLP, one thread) times every call of each callback's own step
   hooks (the median call counts);
2. Lightning's calls of the six step hooks (``compat.call_callback_hook``) are timed many times
   on each side's callbacks as the fit left them, their work taken out: what the callbacks cost
   a step just by being in the list. The hooks a callback leaves empty are skipped, and the idle
   callbacks have left (``mnist_lit/callbacks/idle.py``);
3. inside one fit, blocks of steps alternate between the project's callbacks and logger and
   Lightning alone's (channels-last, the model summary, one checkpoint callback, no logger): the
   share as the median difference of a pair of blocks taken a fraction of a second apart, at
   make bench's threads, for the MLP and the CNN. It counts what 1 and 2 leave out (the logger,
   caches); make bench checks the 5 % aim with it.

``python benchmarks/callback_cost.py [--steps 300] [--calls 20000] [--epochs N] [--block N]
[--batches N] [--repeats N] [--by-place]``
"""

from __future__ import annotations

import argparse
import collections
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary
from mnist_lit.callbacks.idle import STEP_HOOKS
from pipelines import PIPELINE_OVERRIDES, compose_config, library_output_to, throughput_overrides
from timing import settle_process

from mnist_lit.callbacks import ChannelsLast
from mnist_lit.compat import call_callback_hook
from mnist_lit.train import build_model, build_trainer

SIDES = {"lightning": "project's Trainer", "lightning_bare": "Lightning alone"}


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


def fit_side(
    side: str, steps: int, out: Path
) -> tuple[L.Trainer, list[str], dict[str, list[float]]]:
    """One fit of ``side`` as make bench builds it: the trainer, the names of the callbacks it
    started with, and the seconds of each call of each callback's own step hooks
    (``Class.hook``: those the trainer calls, its empty ones skipped)."""
    cfg = compose_config("train", throughput_overrides("mlp", steps, PIPELINE_OVERRIDES[side]), out)
    L.seed_everything(cfg.seed, verbose=False)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, list[float]] = collections.defaultdict(list)
    with library_output_to(out / "library_output.log"):
        datamodule = instantiate(cfg.data)
        trainer = build_trainer(cfg)
        started_with = [type(c).__name__ for c in trainer.callbacks]  # type: ignore[attr-defined]
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            for hook in STEP_HOOKS:
                if callable(getattr(callback, hook)):
                    name = f"{type(callback).__name__}.{hook}"
                    setattr(callback, hook, _timed(getattr(callback, hook), name, seconds))
        trainer.fit(build_model(cfg), datamodule=datamodule)
    return trainer, started_with, seconds


def _empty(*args: Any, **kwargs: Any) -> None:
    """A hook that does nothing."""


def seconds_calling_step_hooks(trainer: L.Trainer, calls: int) -> tuple[int, float]:
    """Lightning's calls of the six step hooks on ``trainer``'s callbacks, the hooks' own work
    taken out (part 1 times it): how many hooks it calls a step, and the seconds of a step's."""
    callbacks = trainer.callbacks  # type: ignore[attr-defined]
    called = [(c, hook) for c in callbacks for hook in STEP_HOOKS if callable(getattr(c, hook))]
    own = [(c, hook, vars(c).get(hook)) for c, hook in called]
    for c, hook in called:
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
    return len(called), seconds


class AlternateSides(L.Callback):
    """Every ``block`` steps, switches the trainer between the project's callbacks and logger
    and Lightning alone's, and keeps each block's mean step time. First in the list, so its own
    cost is the same on both sides.

    The first ``settle`` steps after a switch are left out: the second step after a switch to
    the project's side is slower (benchmarks/README.md), a cost a run that never switches does
    not pay. So is the first step of an epoch, which comes after validation.
    """

    def __init__(self, block: int, settle: int) -> None:
        self.block, self.settle = block, settle
        self.sides: dict[str, tuple[list[L.Callback], list[Any]]] = {}
        self.side = "project"
        self.block_means: list[tuple[str, float]] = []
        self._steps: list[float] = []
        self._last: float | None = None
        self._count = 0
        #: every step's seconds (the warm-up pair of blocks left out) by its place in its block
        self.by_place: dict[str, list[list[float]]] = {
            side: [[] for _ in range(block)] for side in ("project", "alone")
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        callbacks = list(trainer.callbacks)  # type: ignore[attr-defined]
        alone = [self, *(c for c in callbacks if isinstance(c, (ChannelsLast, ModelSummary)))]
        alone.append(next(c for c in callbacks if isinstance(c, ModelCheckpoint)))
        self.sides = {"project": (callbacks, list(trainer.loggers)), "alone": (alone, [])}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._count += 1
        settled = self._count % self.block > self.settle or self._count % self.block == 0
        if self._last is not None and batch_idx:
            if settled:
                self._steps.append(now - self._last)
            if self._count > 2 * self.block:
                place = (self._count - 1) % self.block
                self.by_place[self.side][place].append(now - self._last)
        if self._count % self.block == 0:
            if self._steps:
                self.block_means.append((self.side, statistics.fmean(self._steps)))
            self._steps = []
            self.side = "alone" if self.side == "project" else "project"
            trainer.callbacks, trainer.loggers = (list(x) for x in self.sides[self.side])  # type: ignore[attr-defined]
        self._last = time.perf_counter()


@dataclass
class Share:
    """The project's share of a step inside one fit, from pairs of blocks taken in turn."""

    model: str
    pairs: int
    block: int
    project_ms: float  # a step with the project's callbacks and logger (median of its blocks)
    alone_ms: float  # with Lightning alone's
    share_pct: float  # the median difference of a pair, over the project's step
    by_place_ms: dict[str, list[float]]  # each side's median step at each place after a switch

    def summary(self) -> str:
        return (
            f"{self.model.upper()}: a step {self.project_ms:.3f} ms with the project's callbacks"
            f" and logger, {self.alone_ms:.3f} ms with Lightning alone's ({self.pairs} pairs of"
            f" {self.block}-step blocks): the project's share {self.share_pct:.1f} %"
        )


class ShareRun(NamedTuple):
    """How part 3 measures one model: epochs of its fit, batches of an epoch (None: all),
    steps a block, and steps left out after each switch."""

    epochs: int
    batches: int | None
    block: int
    settle: int


def share_in_fit(model: str, run: ShareRun, out: Path) -> Share:
    """The project's share of a ``model`` step inside one fit, as make bench trains (its
    threads; the first pair of blocks, a warm-up, left out)."""
    overrides = [o for o in throughput_overrides(model, 1) if "train_batches" not in o]
    if run.batches is not None:
        overrides.append(f"+trainer.limit_train_batches={run.batches}")
    cfg = compose_config("train", [*overrides, f"trainer.max_epochs={run.epochs}"], out)
    L.seed_everything(cfg.seed, verbose=False)
    out.mkdir(parents=True, exist_ok=True)
    with library_output_to(out / "library_output.log"):
        datamodule = instantiate(cfg.data)
        trainer = build_trainer(cfg)
        alternate = AlternateSides(run.block, run.settle)
        trainer.callbacks.insert(0, alternate)  # type: ignore[attr-defined]
        trainer.fit(build_model(cfg), datamodule=datamodule)
    means = alternate.block_means[2:]
    project = [s for side, s in means if side == "project"]
    alone = [s for side, s in means if side == "alone"]
    pairs = min(len(project), len(alone))
    differences = [p - a for p, a in zip(project[:pairs], alone[:pairs], strict=True)]
    project_s = statistics.median(project[:pairs])
    return Share(
        model=model,
        pairs=pairs,
        block=run.block,
        project_ms=project_s * 1e3,
        alone_ms=statistics.median(alone[:pairs]) * 1e3,
        share_pct=statistics.median(differences) / project_s * 100,
        by_place_ms={
            side: [statistics.median(steps) * 1e3 if steps else math.nan for steps in places]
            for side, places in alternate.by_place.items()
        },
    )


#: make bench's share check: short blocks, so that the two sides of a pair are timed within
#: 0.05 s (MLP) or 0.4 s (CNN) of each other; the MLP's steps are short, so it runs more epochs
SHARE_RUNS = {"mlp": ShareRun(6, None, 10, 2), "cnn": ShareRun(2, None, 10, 2)}


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
            trainer, started_with, seconds = fit_side(side, args.steps, Path(tmp) / side)
            steps = trainer.global_step
            hook_calls, calling = seconds_calling_step_hooks(trainer, args.calls)
            call_us[side] = calling * 1e6
            # a typical step: the median call, times the calls a step. The first batch's one-off
            # work (the sample images, the start-up time, then those callbacks leave) is not a
            # step's cost: a hook called once is left out
            typical = {
                hook: statistics.median(times) * len(times) / steps * 1e6
                for hook, times in seconds.items()
                if len(times) > 1
            }
            body_us[side] = sum(typical.values())
            count[side] = len(trainer.callbacks)  # type: ignore[attr-defined]
            names = [type(c).__name__ for c in trainer.callbacks]  # type: ignore[attr-defined]
            left = list((collections.Counter(started_with) - collections.Counter(names)).elements())
            print(f"{name}: {count[side]} callbacks in the steps ({', '.join(names)})")
            if left:
                print(f"  and {len(left)} that left the trainer once idle ({', '.join(left)})")
            print(
                f"  {hook_calls} hook calls a step of the {len(STEP_HOOKS) * count[side]}"
                f" ({len(STEP_HOOKS)} step hooks x {count[side]} callbacks; the empty ones are"
                f" skipped), calling them: {call_us[side]:.1f} us a step"
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
