"""Part 6 of ``make bench``: training on a machine that isn't idle.

``python train.py experiment=fast test=false`` (its fit seconds, from metrics.json) and the
pytorch/examples pipeline (its ``Net``, DataLoader and Adadelta, 150 steps), each idle, beside
one process that keeps a core busy, and beside two; every run a fresh process, as a user starts
it. Each slowdown is against the same pipeline idle; the ratio is the examples' seconds over the
project's under the same load (above the idle ratio: the project kept its lead). With
``--baseline``, the project once more with torch's own thread count
(``callbacks.cpu_threads=null``), as before the thread policy, over its first 100 batches (the
whole epoch took over 15 minutes beside one busy core). The busy processes are started and ended
here, also when this is stopped by SIGTERM.

``python benchmarks/contention.py [--quick] [--baseline]`` prints the table; bench.py calls
``measure_contention``. ``python benchmarks/contention.py examples --steps N`` times the
examples pipeline alone (what the table runs in its own process).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parent
#: the loads, by the number of processes that keep a core busy beside the timed run
LOADS = {"idle": 0, "one busy core": 1, "two busy processes": 2}
#: no single run of the table may take longer (a machine far slower than expected)
RUN_TIMEOUT = 900
#: the baseline's fit: its first batches only (torch's own threads beside busy processes crawl)
BASELINE_BATCHES = 100


@contextlib.contextmanager
def busy_processes(count: int) -> Iterator[None]:
    """``count`` processes spinning on the CPU while inside; ended on the way out, whatever
    happened (each in its own process group, with ``timeout`` as the bound if this dies)."""
    spinners = [
        subprocess.Popen(
            ["timeout", str(RUN_TIMEOUT * 4), sys.executable, "-c", "while True: pass"],
            start_new_session=True,
        )
        for _ in range(count)
    ]
    try:
        time.sleep(0.5 if count else 0)  # scheduled and spinning before the run starts
        yield
    finally:
        for spinner in spinners:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(spinner.pid, signal.SIGKILL)
            spinner.wait()


def project_fit(run_dir: Path, data_dir: Path, quick: bool, baseline: bool = False) -> float:
    """``python train.py experiment=fast test=false``: the fit seconds it writes."""
    command = [
        sys.executable,
        str(PROJECT_ROOT / "train.py"),
        "experiment=fast",
        "test=false",
        "trainer=cpu",
        "callbacks.progress_bar=null",
        "+trainer.enable_progress_bar=false",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={run_dir}",
    ]
    if quick:
        command += ["+trainer.limit_val_batches=1"]
        command += [] if baseline else ["+trainer.limit_train_batches=12"]
    if baseline:
        command += [
            "callbacks.cpu_threads=null",
            f"+trainer.limit_train_batches={BASELINE_BATCHES}",
        ]
    subprocess.run(command, cwd=PROJECT_ROOT, check=True, timeout=RUN_TIMEOUT, capture_output=True)
    return float(json.loads((run_dir / "metrics.json").read_text())["fit_seconds"])


def examples_steps(data_dir: Path, steps: int) -> float:
    """pytorch/examples' training loop for ``steps`` batches of 64, in a fresh process: the
    seconds of those steps (loading included, as its loop does)."""
    done = subprocess.run(
        [sys.executable, str(Path(__file__)), "examples", "--steps", str(steps),
         "--data-dir", str(data_dir)],
        check=True, timeout=RUN_TIMEOUT, capture_output=True, text=True,
    )  # fmt: skip
    return float(done.stdout.strip().splitlines()[-1])


def time_examples(data_dir: Path, steps: int) -> float:
    """The loop itself (``examples`` sub-command): what ``examples_steps`` runs."""
    import torch
    import torch.nn.functional as F
    from pipelines import EXAMPLES_SEED, EXAMPLES_WORKERS, examples_loader
    from time_to_accuracy import ExamplesNet

    torch.manual_seed(EXAMPLES_SEED)
    model = ExamplesNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    loader = examples_loader(data_dir, 64, EXAMPLES_WORKERS)
    model.train()
    started = time.perf_counter()
    for done, (images, labels) in enumerate(loader, start=1):
        optimizer.zero_grad()
        F.nll_loss(model(images), labels).backward()
        optimizer.step()
        if done == steps:
            break
    return time.perf_counter() - started


def measure_contention(
    data_dir: Path,
    work_dir: Path,
    quick: bool = False,
    baseline: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Each pipeline under each load, and the slowdowns and ratios (``render_contention``)."""
    steps = 10 if quick else 150
    rows: dict[str, dict[str, float]] = {}
    for load, busy in LOADS.items():
        with busy_processes(busy):
            row = {"project_s": project_fit(work_dir / f"project-{busy}", data_dir, quick)}
            row["examples_s"] = examples_steps(data_dir, steps)
            if baseline:
                run_dir = work_dir / f"baseline-{busy}"
                row["baseline_s"] = project_fit(run_dir, data_dir, quick, baseline=True)
        rows[load] = row
        say(
            f"  {load}: project {row['project_s']:.1f} s, examples {row['examples_s']:.1f} s"
            + (f", project with torch's threads {row['baseline_s']:.1f} s" if baseline else "")
        )
    idle = rows["idle"]
    for row in rows.values():
        row["project_slowdown"] = row["project_s"] / idle["project_s"]
        row["examples_slowdown"] = row["examples_s"] / idle["examples_s"]
        row["examples_over_project"] = row["examples_s"] / row["project_s"]
        if baseline:
            row["baseline_slowdown"] = row["baseline_s"] / idle["baseline_s"]
    return {"examples_steps": steps, "baseline": baseline, "loads": rows}


def render_contention(results: dict[str, Any]) -> list[str]:
    """The markdown table of ``measure_contention``'s figures."""
    baseline = results["baseline"]
    head = "| load | project fit | slowdown | examples, {} steps | slowdown | examples / project |"
    lines = [head.format(results["examples_steps"])]
    lines.append("|---|---:|---:|---:|---:|---:|")
    if baseline:
        lines[0] += f" project, torch's threads, {BASELINE_BATCHES} batches | slowdown |"
        lines[1] += "---:|---:|"
    for load, row in results["loads"].items():
        line = (
            f"| {load} | {row['project_s']:.1f} s | {row['project_slowdown']:.2f}x | "
            f"{row['examples_s']:.1f} s | {row['examples_slowdown']:.2f}x | "
            f"{row['examples_over_project']:.2f} |"
        )
        if baseline:
            line += f" {row['baseline_s']:.1f} s | {row['baseline_slowdown']:.2f}x |"
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=["table", "examples"], default="table")
    parser.add_argument("--quick", action="store_true", help="a few batches (for tests)")
    parser.add_argument("--baseline", action="store_true", help="also torch's own thread count")
    parser.add_argument("--steps", type=int, default=150, help="examples: the steps to time")
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / "data")
    parser.add_argument("--out", type=Path, help="where the runs go (default: a temporary dir)")
    args = parser.parse_args(argv)
    # SIGTERM as an exception: the busy processes and the timed run are ended on the way out
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if args.what == "examples":
        print(f"{time_examples(args.data_dir, args.steps):.3f}")
        return 0
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        work_dir = args.out or Path(scratch)
        results = measure_contention(args.data_dir, work_dir, args.quick, args.baseline)
    print("\n".join(render_contention(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
