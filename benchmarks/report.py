"""The benchmark's checks (each figure against its target) and its report, bench.md.

The report states the figures and this run's settings; benchmarks/README.md, which it links to,
says what each figure includes and why it is measured that way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from callback_cost import Share
from pipelines import (
    EXAMPLES_SEED,
    EXAMPLES_SHUFFLE,
    EXAMPLES_WORKERS,
    MEAN,
    PIPELINE_NAMES,
    PIPELINES,
    STD,
)
from startup import ANSWERED_WITHOUT_TORCH
from timing import GB

#: the methodology in prose, which the report links to
METHODOLOGY = Path(__file__).with_name("README.md")


@dataclass(frozen=True)
class Check:
    """One measured figure against its target."""

    name: str
    value: str
    target: str
    passed: bool

    @property
    def mark(self) -> str:
        return "PASS" if self.passed else "MISS"


def checks(results: dict[str, Any]) -> list[Check]:
    """The issue's targets, each with the figure measured in this run."""
    found: list[Check] = []
    throughput = results["throughput"]
    for model, target in (("cnn", 1.3), ("mlp", 5.0)):
        ratio = throughput[model]["project_vs_examples"]
        found.append(
            Check(
                f"{model.upper()}: project pipeline / pytorch/examples pipeline, samples/s",
                f"{ratio:.2f}x",
                f">= {target:g}x",
                ratio >= target,
            )
        )
    for model in ("cnn", "mlp"):
        overhead = throughput[model]["lightning_overhead_pct"]
        found.append(
            Check(
                f"{model.upper()}: Lightning overhead over the plain loop",
                f"{overhead:.1f} %",
                "<= 5 %",
                overhead <= 5.0,
            )
        )
    for model in ("cnn", "mlp"):
        share = results["share"][model]["share_pct"]
        found.append(
            Check(
                f"{model.upper()}: the project's own share of a step (callbacks, metrics, "
                "logging over Lightning alone)",
                f"{share:.1f} %",
                "<= 5 %",
                share <= 5.0,
            )
        )
    found.append(time_to_accuracy_check(results["time_to_accuracy"]))
    run = results["memory"]["default_run"]
    peak = run["peak_rss_bytes"] / GB
    found.append(
        Check("peak RSS of a 1-epoch default run", f"{peak:.2f} GB", "< 1.5 GB", peak < 1.5)
    )
    if "startup" in results:
        found += startup_checks(results["startup"], run)
    return found


#: the commands that must answer before torch loads, within this many seconds
INSTANT_S = 1.0
#: what start-up may add to the bare ``import torch, lightning``, in seconds
OVER_FLOOR_S = 1.5


def startup_checks(startup: dict[str, Any], default_run: dict[str, Any]) -> list[Check]:
    """Start-up and memory against the floor measured in the same run."""
    floor = startup["floor"]["import torch, lightning"]["median_s"]
    commands = {name: c["median_s"] for name, c in startup["commands"].items()}
    found = [
        Check(f"`python {name}`", f"{seconds:.2f} s", f"<= {INSTANT_S:g} s", seconds <= INSTANT_S)
        for name, seconds in commands.items()
        if name in ANSWERED_WITHOUT_TORCH
    ]
    ckpt = commands["predict.py on the checkpoint, one image"]
    found.append(
        Check(
            "`predict.py` on the checkpoint, one image, over the floor",
            f"{ckpt - floor:+.2f} s ({ckpt:.2f} s)",
            f"<= +{OVER_FLOOR_S:g} s",
            ckpt - floor <= OVER_FLOOR_S,
        )
    )
    first_step = default_run.get("startup_s")
    if first_step is not None:
        found.append(
            Check(
                "launch to the first training step (default run), over the floor",
                f"{first_step - floor:+.2f} s ({first_step:.2f} s)",
                f"<= +{OVER_FLOOR_S:g} s",
                first_step - floor <= OVER_FLOOR_S,
            )
        )
    first_steps = startup.get("fast_dev_run_startup_s")
    if first_steps is not None:
        found.append(
            Check(
                "launch to the first training step, `debug=fast_dev_run` (median)",
                f"{first_steps:.2f} s",
                "<= 4 s (aimed)",
                first_steps <= 4.0,
            )
        )
    fast_dev_run = commands["train.py debug=fast_dev_run"]
    found.append(
        Check("`train.py debug=fast_dev_run`, wall", f"{fast_dev_run:.2f} s", "<= 6 s (aimed)",
              fast_dev_run <= 6.0)
    )  # fmt: skip
    added = (default_run["peak_rss_bytes"] - startup["floor_peak_rss_bytes"]) / 1e6
    found.append(
        Check(
            "peak RSS the project adds to a bare `import torch, lightning` (1-epoch default run)",
            f"{added:.0f} MB",
            "< 250 MB",
            added < 250,
        )
    )
    return found


def time_to_accuracy_check(tta: dict[str, Any], target: float = 25.0) -> Check:
    """examples / fast seconds to 99.0 %; a lower bound when only the examples recipe missed."""
    name = "time to 99.0 %: pytorch/examples recipe / experiment=fast"
    wanted = f">= {target:g}x"
    examples, fast = tta["examples"], tta["fast"]
    if fast["reached_s"] is None:
        return Check(name, "n/a: experiment=fast did not reach 99.0 %", wanted, False)
    if examples["reached_s"] is None:
        bound = examples["train_s"] / fast["reached_s"]
        value = f"> {bound:.1f}x (examples: not reached in {examples['train_s']:.0f} s)"
        return Check(name, value, wanted, bound >= target)
    ratio = examples["reached_s"] / fast["reached_s"]
    return Check(name, f"{ratio:.1f}x", wanted, ratio >= target)


def _table(
    header: list[str], rows: list[list[str]], right: frozenset[int] | set[int] = frozenset()
) -> list[str]:
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _time_cell(run: dict[str, Any]) -> str:
    if run["reached_s"] is None:
        return f"not reached after {run['train_s']:.1f} s"
    return f"{run['reached_s']:.1f} s"


def render(
    results: dict[str, Any], found: list[Check], methodology: str = "benchmarks/README.md"
) -> str:
    """The whole report as markdown: what was measured, the targets, and this run's settings;
    ``methodology`` is the link to benchmarks/README.md from where the report is written."""
    env, plan = results["machine"], results["plan"]
    throughput, tta = results["throughput"], results["time_to_accuracy"]
    memory = results["memory"]
    lines = ["# mnist-lit benchmark", ""]
    if plan["quick"]:
        lines += [
            "**QUICK smoke run** (`--quick`): a few batches of everything, so the figures and the",
            "PASS/MISS marks mean nothing; `make bench` gives the real ones.",
            "",
        ]
    lines += [
        f"Measured by `make bench` (benchmarks/bench.py, {results['started']}) in one run: "
        f"{env['cpu']}, {env['cpus']} CPUs, torch {env['torch']} with "
        f"{env['torch_threads']} threads "
        f"(`torch.get_num_threads()`, {env['torch_threads_end']} at the end), "
        f"lightning {env['lightning']}, torchvision {env['torchvision']}, "
        f"Python {env['python']}; load average {env['load_start']:.2f} at the start, "
        f"{env['load_end']:.2f} at the end (above 0: others shared the cores). "
        f"Seeds 42 (project, conf/train.yaml) and {EXAMPLES_SEED} (pytorch/examples' default); "
        "deterministic algorithms on everywhere (the project's `trainer.deterministic`); "
        f"glibc malloc {'pinned' if env.get('malloc_pinned') else 'not pinned'} (see below). "
        f"The project trains at `{env['project_precision']}` here "
        "(`trainer.precision: auto`: bf16 autocast where the CPU multiplies bf16 natively).",
        "",
        "## Training throughput (batch "
        + " / ".join(sorted({f"{throughput[m]['batch_size']}" for m in ("cnn", "mlp")}))
        + f", samples/s, median of {plan['repeats']} repeats)",
        "",
    ]
    rows = []
    for model in ("cnn", "mlp"):
        t = throughput[model]
        rates = [f"{t['samples_per_s'][p]:,.0f}" for p in PIPELINES]
        rows.append(
            [
                f"{model} ({t['timed_batches']} batches after {t['warmup_batches']} warm-up)",
                *rates,
                f"{t['project_vs_examples']:.2f}x",
                f"{t['lightning_overhead_pct']:.1f} %",
                f"{t['bare_overhead_pct']:.1f} %",
                f"{t['lightning_step_ms']:+.2f} ms ({t['bare_step_ms']:+.2f} ms)",
            ]
        )
    header = ["model", *(PIPELINE_NAMES[p] for p in PIPELINES)]
    header += ["project / examples", "Lightning overhead", "of which Lightning alone"]
    header += ["time Lightning adds to a step (alone)"]
    lines += _table(header, rows, set(range(1, len(header))))
    lines += ["", "The project's own share of a step, inside one fit:", ""]
    lines += [f"- {Share(**results['share'][model]).summary()}" for model in ("cnn", "mlp")]
    lines += [
        "",
        "## Time to 99.0 % test accuracy (training seconds; evaluations off the clock)",
        "",
    ]
    rows = []
    recipes = (
        ("examples", "pytorch/examples: its `Net`, Adadelta lr 1.0, StepLR 0.7, batch 64"),
        ("fast", "project: `experiment=fast` through the Trainer"),
    )
    for key, name in recipes:
        run = tta[key]
        epoch = "" if run["reached_epoch"] is None else f"{run['reached_epoch']:.2f}"
        evals = ", ".join(
            f"{e['epoch']:.2f}: {e['acc']:.2%} ({e['train_s']:.1f} s)" for e in run["evals"]
        )
        rows.append([name, _time_cell(run), epoch, evals])
    lines += _table(
        ["recipe", "99.0 % after", "epoch", "test accuracy at each evaluation (epoch: acc (s))"],
        rows,
        {1, 2},
    )
    run, evaluation = memory["default_run"], memory["eval"]
    lines += ["", "## Evaluation and memory", ""]
    lines += _table(
        ["figure", "value"],
        [
            [
                f"`trainer.test` (eval.py's trainer) on {evaluation['images']:,} test images, the "
                f"1-epoch default CNN, batch {evaluation['batch_size']}",
                f"{evaluation['trainer_test_images_per_s']:,.0f} images/s",
            ],
            [
                "the same model, forward passes alone over the data module's test batches "
                f"(at the trainer's precision, {evaluation['precision']})",
                f"{evaluation['forward_images_per_s']:,.0f} images/s",
            ],
            [
                f"peak RSS of `{run['command']}` (1 epoch: fit + test, a subprocess)",
                f"{run['peak_rss_bytes'] / GB:.2f} GB",
            ],
            [
                "that run: wall time / fit time / test accuracy",
                f"{run['wall_s']:.0f} s / {run['fit_s']:.0f} s / {run['test_acc']:.2%}",
            ],
        ],
        {1},
    )
    if "startup" in results:
        lines += startup_section(results["startup"], run)
    lines += ["", "## Targets", ""]
    lines += _table(
        ["check", "measured", "target", ""],
        [[c.name, c.value, c.target, c.mark] for c in found],
        {1, 2},
    )
    lines += ["", "## How it was measured", ""]
    lines += settings(plan, env, methodology)
    return "\n".join(lines) + "\n"


def startup_section(startup: dict[str, Any], run: dict[str, Any]) -> list[str]:
    """Part 5: the floor and each command, wall seconds (median), and the memory beside it."""
    repeats = startup["repeats"]
    lines = ["", f"## Start-up (wall seconds of the whole process, median of {repeats})", ""]
    rows = [
        [f'floor: `python -c "{name}"`', f"{f['median_s']:.2f} s", ""]
        for name, f in startup["floor"].items()
    ]
    rows += [
        [f"`python {name}`", f"{c['median_s']:.2f} s", ",".join(map(str, c["exit_codes"]))]
        for name, c in startup["commands"].items()
    ]
    if run.get("startup_s") is not None:
        rows.append(
            [
                "launch to the first training step of the 1-epoch default run (`metrics.json`: "
                "`startup_seconds`)",
                f"{run['startup_s']:.2f} s",
                "0",
            ]
        )
    if startup.get("fast_dev_run_startup_s") is not None:
        rows.append(
            [
                f"the same in `debug=fast_dev_run` (no sanity-check validation first; median of"
                f" {repeats})",
                f"{startup['fast_dev_run_startup_s']:.2f} s",
                "0",
            ]
        )
    lines += _table(["command", "wall", "exit code"], rows, {1, 2})
    floor_rss = startup["floor_peak_rss_bytes"]
    lines += [
        "",
        f"Peak RSS: bare `import torch, lightning` {floor_rss / 1e6:,.0f} MB; the 1-epoch default "
        f"run {run['peak_rss_bytes'] / 1e6:,.0f} MB; the project adds "
        f"{(run['peak_rss_bytes'] - floor_rss) / 1e6:,.0f} MB.",
    ]
    return lines


def settings(plan: dict[str, Any], env: dict[str, Any], methodology: str) -> list[str]:
    """This run's settings, in brief: the figures that the methodology leaves to the run."""
    epochs = plan["examples_max_epochs"]
    malloc = "pinned" if env.get("malloc_pinned") else "not pinned"
    return [
        f"What each figure includes and why: [benchmarks/README.md]({methodology}). This run:",
        "",
        "- **pytorch/examples pipeline**: torchvision `MNIST` with "
        f"`Compose([ToTensor(), Normalize(({MEAN},), ({STD},))])` and "
        f"`DataLoader(batch_size, shuffle={EXAMPLES_SHUFFLE}, "
        f"num_workers={plan['examples_workers']})` (`--examples-workers`; "
        f"{EXAMPLES_WORKERS} by default, as pytorch/examples runs on the CPU), float32.",
        "- **Throughput**: whole iterations (get a batch, forward, loss, backward, step) after "
        "warm-up batches, the pipelines' repeats interleaved in a rotating order; the overhead is "
        "(plain median / Lightning median - 1) x 100 and the time it adds to a step is "
        "batch / Lightning median - batch / plain median. The progress bar is off in every "
        "timed fit, and each fit ends with 1 validation batch, after the window.",
        "- **The project's share of a step**: one fit a model, its steps in blocks that take "
        "turns between the project's callbacks and logger and Lightning alone's (channels-last, "
        "the model summary, one checkpoint callback, no logger); the median difference of a pair "
        "over the project's median block. The first steps after each switch are left out "
        "(benchmarks/callback_cost.py, which also takes the share apart hook by hook).",
        f"- **Time to 99.0 %**: test accuracy on {plan['tta_test_images'] or 10_000:,} test "
        f"images every half epoch for pytorch/examples (at most {epochs} epoch(s)) and every "
        "quarter epoch for `experiment=fast`, the clock stopped while evaluating.",
        f"- **Evaluation**: median of {plan['eval_repeats']} passes after 1 warm-up pass.",
        "- **Peak RSS**: of the `train.py` process alone (read through a small launcher process); "
        "1 GB = 10^9 bytes.",
        f"- **Memory allocator**: glibc malloc {malloc} (`mallopt`: allocations under 32 MB "
        "from the heap, no trimming) for every pipeline alike; the 1-epoch default run is a "
        "fresh process, not pinned.",
    ]
