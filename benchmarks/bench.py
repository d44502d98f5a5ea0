"""``make bench``: this template's pipeline side by side with the pytorch/examples way, one run.

Plans the work (the full benchmark or ``--quick``), runs the five parts (pipelines.py,
time_to_accuracy.py and startup.py, timed as timing.py says), checks each figure against its
target and writes the report (report.py):

1. training samples/s: pytorch/examples' pipeline versus this template's Lightning pipeline;
2. Lightning's overhead over a plain hand-written loop on the very same in-memory batches, and
   the project's own share of a step over Lightning alone, inside one fit (share.py; a reported
   figure, not checked against a target);
3. training seconds to 99.0 % test accuracy: the pytorch/examples recipe versus ``experiment=fast``;
4. test-set images/s through ``trainer.test``, and the peak RSS of a 1-epoch default run;
5. start-up: each command's wall time (``--help``, refused command lines, predict on the ONNX
   file and on the checkpoint, ``debug=fast_dev_run``) beside the bare ``import torch`` /
   ``import lightning`` floor and its peak RSS, measured in the same run (startup.py);
6. a machine that isn't idle: ``experiment=fast`` and the pytorch/examples pipeline idle, beside
   one busy core and beside two busy processes (contention.py).

``python benchmarks/bench.py [--quick] [--out DIR] [--examples-workers N] [--baseline]`` prints
the tables (markdown) and writes them to ``DIR/bench.md`` with every raw figure in
``DIR/bench.json`` (default ``logs/bench/<time>/``). ``--quick`` does a few batches of each, for
the test suite: its figures mean nothing. The methodology: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from contention import measure_contention
from pipelines import (
    DATA_DIR,
    EXAMPLES_WORKERS,
    PIPELINES,
    compose_config,
    default_run,
    eval_throughput,
    project_precision,
    run_pipeline,
    throughput_overrides,
)
from report import METHODOLOGY, checks, render
from share import SHARE_RUNS, ShareRun, share_in_fit
from startup import measure_startup
from time_to_accuracy import TARGET_ACC, examples_time_to_accuracy, fast_time_to_accuracy
from timing import GB, Plan, machine_facts, settle_process

from mnist_lit.config import PROJECT_ROOT
from mnist_lit.data import MNIST
from mnist_lit.data.download import ensure_dataset

FULL = Plan(
    quick=False,
    # the medians must move less than the 5 % overhead target they are checked against
    repeats=5,
    warmup={"cnn": 5, "mlp": 20},
    timed={"cnn": 150, "mlp": 400},
    examples_max_epochs=6,
    tta_batches=None,
    tta_test_images=None,
    eval_repeats=3,
    eval_batches=None,
    startup_repeats=5,
    default_run_extra=(),
    examples_workers=EXAMPLES_WORKERS,
    share_runs=dict(SHARE_RUNS),
)
QUICK = Plan(
    quick=True,
    repeats=3,
    # OneCycleLR needs more than 4 steps in all
    warmup={"cnn": 2, "mlp": 2},
    timed={"cnn": 4, "mlp": 6},
    examples_max_epochs=1,
    tta_batches=8,
    tta_test_images=1000,
    eval_repeats=3,
    eval_batches=1,
    startup_repeats=1,
    default_run_extra=(
        "+trainer.limit_train_batches=8",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
    ),
    examples_workers=EXAMPLES_WORKERS,
    share_runs={"mlp": ShareRun(1, 24, 4, 1), "cnn": ShareRun(1, 24, 4, 1)},
)

_STARTED = time.perf_counter()


def say(message: str) -> None:
    """Progress on stdout, with the seconds since start: the full benchmark takes minutes."""
    print(f"[bench {time.perf_counter() - _STARTED:5.0f} s] {message}", flush=True)


def measure_throughput(plan: Plan, data_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Parts 1 and 2: samples/s of the pipelines, repeats interleaved in a rotating order."""
    results: dict[str, Any] = {}
    for model in ("cnn", "mlp"):
        batch = int(
            compose_config("train", throughput_overrides(model, 1), work_dir).data.batch_size
        )
        rates: dict[str, list[float]] = {p: [] for p in PIPELINES}
        for repeat in range(plan.repeats):
            turn = repeat % len(PIPELINES)
            order = PIPELINES[turn:] + PIPELINES[:turn]
            for pipeline in order:
                run_dir = work_dir / f"{model}_{pipeline}_{repeat}"  # the Lightning fit's own
                rate = run_pipeline(
                    pipeline, model, plan, data_dir, run_dir, work_dir / "library_output.log"
                )
                rates[pipeline].append(rate)
                say(f"{model} repeat {repeat + 1}/{plan.repeats}: {pipeline} {rate:,.0f} samples/s")
        medians = {p: statistics.median(r) for p, r in rates.items()}
        # the overheads as time added to each step: Lightning's is nearly the same for any model
        step_ms = {p: batch / rate * 1e3 for p, rate in medians.items()}
        results[model] = {
            "batch_size": batch,
            "samples_per_s": medians,
            "repeats": rates,
            "warmup_batches": plan.warmup[model],
            "timed_batches": plan.timed[model],
            "project_vs_examples": medians["lightning"] / medians["examples"],
            "lightning_overhead_pct": (medians["plain"] / medians["lightning"] - 1) * 100,
            "bare_overhead_pct": (medians["plain"] / medians["lightning_bare"] - 1) * 100,
            "lightning_step_ms": step_ms["lightning"] - step_ms["plain"],
            "bare_step_ms": step_ms["lightning_bare"] - step_ms["plain"],
            # the project's share as a difference of two fits' throughputs: too coarse on a
            # shared machine, so measure_share takes it inside one fit
            "share_from_throughputs_pct": (step_ms["lightning"] - step_ms["lightning_bare"])
            / step_ms["lightning"]
            * 100,
            "bf16_speedup": medians["lightning"] / medians["lightning_fp32"],
        }
    return results


def measure_share(plan: Plan, work_dir: Path) -> dict[str, Any]:
    """Part 2, the project's own share of a step: blocks of steps inside one fit, in turn with
    the project's callbacks and logger and with Lightning alone's (share.py). Reported, not
    checked against a target."""
    results: dict[str, Any] = {}
    for model, run in plan.share_runs.items():
        share = share_in_fit(model, ShareRun(*run), work_dir / f"share_{model}")
        say(f"the project's share inside one fit, {share.summary()}")
        results[model] = asdict(share)
    return results


def measure_time_to_accuracy(plan: Plan, data_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Part 3: the two recipes, each to 99.0 % test accuracy (or its cap)."""
    say("time to 99.0 %: experiment=fast through the project's Trainer")
    fast = fast_time_to_accuracy(plan, work_dir / "fast", work_dir / "library_output.log")
    say(f"experiment=fast: {fast.summary()}")
    epochs = plan.examples_max_epochs
    say(f"time to 99.0 %: pytorch/examples recipe (at most {epochs} epoch{'s' * (epochs > 1)})")
    examples = examples_time_to_accuracy(plan, data_dir)
    say(f"pytorch/examples: {examples.summary()}")
    return {"target_acc": TARGET_ACC, "examples": vars(examples), "fast": vars(fast)}


def measure_eval_and_memory(plan: Plan, work_dir: Path) -> dict[str, Any]:
    """Part 4: a 1-epoch default run (peak RSS), then its checkpoint through the eval path."""
    say("peak RSS: python train.py trainer.max_epochs=1 in a subprocess")
    run = default_run(plan, work_dir / "default_run")
    say(f"default run: {run['peak_rss_bytes'] / GB:.2f} GB peak RSS, {run['wall_s']:.0f} s wall")
    say("evaluation throughput: its best checkpoint through trainer.test")
    evaluation = eval_throughput(
        plan, run["best_ckpt"], work_dir / "eval", work_dir / "library_output.log"
    )
    say(f"trainer.test: {evaluation['trainer_test_images_per_s']:,.0f} images/s")
    return {"default_run": run, "eval": evaluation}


def measure_startup_part(plan: Plan, best_ckpt: str, work_dir: Path) -> dict[str, Any]:
    """Part 5: every command against the floor, predict on part 4's checkpoint and its export."""
    say(f"part 5: start-up, {plan.startup_repeats} run(s) of each command")
    startup_dir = work_dir / "startup"
    return measure_startup(plan.startup_repeats, Path(best_ckpt), DATA_DIR, startup_dir, say)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few batches of each (for tests)")
    parser.add_argument("--out", type=Path, help="output dir (default: logs/bench/<time>)")
    parser.add_argument(
        "--examples-workers",
        type=int,
        default=EXAMPLES_WORKERS,
        help="DataLoader workers of the pytorch/examples side (default: %(default)s, as it runs "
        "on the CPU)",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="part 6 also runs the project with torch's own thread count (callbacks.cpu_threads="
        "null), as before the thread policy (minutes more under load)",
    )
    args = parser.parse_args(argv)

    plan = replace(QUICK if args.quick else FULL, examples_workers=args.examples_workers)
    started = datetime.now()
    out = args.out or PROJECT_ROOT / "logs" / "bench" / started.strftime("%Y-%m-%d_%H-%M-%S")
    out = out.resolve()  # the default run works from the repo root
    work_dir = out / "runs"
    work_dir.mkdir(parents=True, exist_ok=True)
    malloc_pinned = settle_process()
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ensure_dataset(MNIST, DATA_DIR / MNIST.raw_subdir)

    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "plan": vars(plan),
    }
    env = results["machine"]
    env["malloc_pinned"] = malloc_pinned
    # what conf/trainer (precision: auto) trains at on this CPU, as the timed fits compose it
    env["project_precision"] = str(project_precision(compose_config("train", ["trainer=cpu"], out)))
    say(f"{env['cpu']}, {env['cpus']} CPUs, torch threads {env['torch_threads']}; output in {out}")
    say(f"parts 1-2: training throughput, {plan.repeats} interleaved repeats")
    results["throughput"] = measure_throughput(plan, DATA_DIR, work_dir)
    results["share"] = measure_share(plan, work_dir)
    results["time_to_accuracy"] = measure_time_to_accuracy(plan, DATA_DIR, work_dir)
    results["memory"] = measure_eval_and_memory(plan, work_dir)
    best_ckpt = results["memory"]["default_run"]["best_ckpt"]
    results["startup"] = measure_startup_part(plan, best_ckpt, work_dir)
    say("part 6: training beside busy processes (idle, one busy core, two)")
    results["contention"] = measure_contention(
        DATA_DIR, work_dir / "contention", plan.quick, args.baseline, say
    )
    env["load_end"] = os.getloadavg()[0]
    env["torch_threads_end"] = torch.get_num_threads()
    results["seconds"] = (datetime.now() - started).total_seconds()

    found = checks(results)
    results["checks"] = [{**vars(c), "mark": c.mark} for c in found]
    report = render(results, found, os.path.relpath(METHODOLOGY, out))
    (out / "bench.md").write_text(report)
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(report, end="")
    say(f"{results['seconds']:.0f} s in all; wrote {out / 'bench.md'} and {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
