"""Where a training step's time goes: the project's Trainer against the plain loop, phase by phase.

``make bench`` says how much slower than a hand-written loop the Lightning pipeline is; this says
in which part of the step that time goes. The same network, batches, optimizer and autocast as
the benchmark's parts 1 and 2, one fit of each, and the median time of each phase over the timed
steps:

- forward + loss: Lightning's ``training_step`` (with the ``train/acc`` and ``train/loss`` metric
  updates) and ``zero_grad``, and the hooks around them; the plain loop's ``zero_grad``, forward
  and loss;
- backward;
- optimizer step: Lightning's closure returns, its hooks, ``optimizer.step``;
- between steps: the next batch, the LR schedule's step, and the rest of the fit loop.

By default it runs on one thread and reads the process's CPU time, not the wall clock: the Python
work that Lightning adds runs on one thread anyway, and CPU time moves less when other programs
share the cores (with more threads, idle OpenMP workers that spin would be counted too).

``python benchmarks/step_phases.py [--model mlp|cnn] [--bare] [--threads N] [--wall]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from pipelines import (
    PIPELINE_OVERRIDES,
    as_the_project_trains,
    compose_config,
    library_output_to,
    project_optimizer,
    throughput_overrides,
)
from timing import autocast_for, settle_process

from mnist_lit.train import build_model, build_trainer

PHASES = ("forward + loss", "backward", "optimizer step", "between steps")
#: the Lightning hooks that bound the phases, in the order they run in a step
HOOKS = ("on_train_batch_start", "on_before_backward", "on_after_backward", "on_train_batch_end")


class PhaseMarks(L.Callback):
    """Reads the clock at the hooks that bound the phases of each training step."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.marks: dict[str, list[float]] = {hook: [] for hook in HOOKS}

    def _mark(self, hook: str) -> None:
        self.marks[hook].append(self.clock())

    def on_train_batch_start(self, *args: Any) -> None:
        self._mark("on_train_batch_start")

    def on_before_backward(self, *args: Any) -> None:
        self._mark("on_before_backward")

    def on_after_backward(self, *args: Any) -> None:
        self._mark("on_after_backward")

    def on_train_batch_end(self, *args: Any) -> None:
        self._mark("on_train_batch_end")

    def phases(self, warmup: int) -> dict[str, list[float]]:
        start, backward, stepped, end = (self.marks[hook] for hook in HOOKS)
        steps = range(warmup, len(start) - 1)
        return {
            "forward + loss": [backward[i] - start[i] for i in steps],
            "backward": [stepped[i] - backward[i] for i in steps],
            "optimizer step": [end[i] - stepped[i] for i in steps],
            "between steps": [start[i + 1] - end[i] for i in steps],
        }


def lightning_phases(
    model: str, bare: bool, steps: int, warmup: int, clock: Callable[[], float], out: Path
) -> dict[str, list[float]]:
    """One fit of the project's Trainer (as ``make bench`` builds it), timed by phase."""
    extra = PIPELINE_OVERRIDES["lightning_bare" if bare else "lightning"]
    cfg = compose_config("train", throughput_overrides(model, steps, extra), out)
    L.seed_everything(cfg.seed, verbose=False)
    out.mkdir(parents=True, exist_ok=True)
    with library_output_to(out / "library_output.log"):
        datamodule = instantiate(cfg.data)
        trainer = build_trainer(cfg)
        marks = PhaseMarks(clock)
        trainer.callbacks.insert(0, marks)  # first: the others' hooks count in the phases
        trainer.fit(build_model(cfg), datamodule=datamodule)
    return marks.phases(warmup)


def plain_phases(
    model: str, steps: int, warmup: int, clock: Callable[[], float], out: Path
) -> dict[str, list[float]]:
    """The benchmark's hand-written loop over the same batches, timed by phase."""
    cfg = compose_config("train", throughput_overrides(model, steps), out)
    L.seed_everything(cfg.seed, verbose=False)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    # the same initial weights as the fit's
    net, precision = as_the_project_trains(cfg, build_model(cfg).net)
    optimizer, scheduler = project_optimizer(cfg, net, steps)
    times: dict[str, list[float]] = {phase: [] for phase in PHASES}
    batches = iter(datamodule.train_dataloader())
    net.train()
    images, labels = next(batches)
    for step in range(steps - 1):
        start = clock()
        optimizer.zero_grad()
        with autocast_for(precision):
            loss = F.cross_entropy(net(images), labels)
        forward_done = clock()
        loss.backward()
        backward_done = clock()
        optimizer.step()
        step_done = clock()
        scheduler.step()
        images, labels = next(batches)
        if step >= warmup:
            times["forward + loss"].append(forward_done - start)
            times["backward"].append(backward_done - forward_done)
            times["optimizer step"].append(step_done - backward_done)
            times["between steps"].append(clock() - step_done)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    parser.add_argument("--bare", action="store_true", help="Lightning alone (make bench's column)")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--warmup", type=int, default=20, help="steps left out (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--wall", action="store_true", help="the wall clock, not CPU time")
    args = parser.parse_args(argv)
    if args.steps - args.warmup < 10:
        parser.error("--steps must exceed --warmup by at least 10")

    settle_process()  # as make bench does: malloc pinned, deterministic, no NaN filling
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.wall else time.process_time
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # the first training in a process runs slower for a while (memory, kernel set-up):
        # a throw-away one first, so neither side pays for it
        plain_phases(args.model, args.warmup + 10, args.warmup, clock, out)
        plain = plain_phases(args.model, args.steps, args.warmup, clock, out)
        lightning = lightning_phases(
            args.model, args.bare, args.steps, args.warmup, clock, out / "fit"
        )

    side = "Lightning alone" if args.bare else "project Trainer"
    what = "wall clock" if args.wall else "CPU time"
    print(f"{args.model}, {args.threads} thread(s), {what}, median ms over {args.steps} steps")
    print(f"| phase | plain loop | {side} | added |")
    print("|---|---:|---:|---:|")
    totals = [0.0, 0.0]
    for phase in PHASES:
        ms = [statistics.median(side_times[phase]) * 1e3 for side_times in (plain, lightning)]
        totals = [t + m for t, m in zip(totals, ms, strict=True)]
        print(f"| {phase} | {ms[0]:.3f} | {ms[1]:.3f} | {ms[1] - ms[0]:+.3f} |")
    added = totals[1] - totals[0]
    print(f"| sum | {totals[0]:.3f} | {totals[1]:.3f} | {added:+.3f} ({added / totals[0]:+.1%}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
