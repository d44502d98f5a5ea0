"""The benchmark's checks (each figure against its target) and its report, bench.md.

The report states the figures and this run's settings; benchmarks/README.md, which it links to,
says what each figure includes and why it is measured that way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contention import render_contention
from pipelines import (
    EXAMPLES_SEED,
    EXAMPLES_SHUFFLE,
    EXAMPLES_WORKERS,
    MEAN,
    PIPELINE_NAMES,
    PIPELINES,
    STD,
)
from report_common import Check, table
from share import Share
from startup_report import startup_checks, startup_section
from timing import GB

#: the methodology in prose, which the report links to
METHODOLOGY = Path(__file__).with_name("README.md")


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
    # the project's own share of a step (results["share"]) is a reported figure, not a check
    found.append(time_to_accuracy_check(results["time_to_accuracy"]))
    run = results["memory"]["default_run"]
    peak = run["peak_rss_bytes"] / GB
    found.append(
        Check("peak RSS of a 1-epoch default run", f"{peak:.2f} GB", "< 1.5 GB", peak < 1.5)
    )
    if "startup" in results:
        found += startup_checks(results["startup"], run)
    if "contention" in results:
        found += contention_checks(results["contention"])
    return found


def contention_checks(contention: dict[str, Any]) -> list[Check]:
    """Part 6's targets: the project's slowdown under each load, and its lead kept."""
    loads = contention["loads"]
    found = [
        Check(
            f"experiment=fast fit, {load} / idle",
            f"{loads[load]['project_slowdown']:.2f}x",
            f"<= {limit:g}x",
            loads[load]["project_slowdown"] <= limit,
        )
        for load, limit in (("one busy core", 2.5), ("two busy processes", 3.5))
    ]
    idle, busy = loads["idle"]["examples_over_project"], loads["one busy core"]
    found.append(
        Check(
            "one busy core: examples / project seconds, against idle's",
            f"{busy['examples_over_project']:.2f} (idle {idle:.2f})",
            ">= idle's",
            busy["examples_over_project"] >= idle,
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
    lines += table(header, rows, set(range(1, len(header))))
    lines += [
        "",
        "The project's own share of a step (its callbacks and logger over Lightning alone's), "
        "inside one fit; a reported figure, not checked against a target:",
        "",
    ]
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
    lines += table(
        ["recipe", "99.0 % after", "epoch", "test accuracy at each evaluation (epoch: acc (s))"],
        rows,
        {1, 2},
    )
    run, evaluation = memory["default_run"], memory["eval"]
    lines += ["", "## Evaluation and memory", ""]
    lines += table(
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
    if "contention" in results:
        lines += ["", "## A machine that isn't idle (part 6: benchmarks/contention.py)", ""]
        lines += render_contention(results["contention"])
    lines += ["", "## Targets", ""]
    lines += table(
        ["check", "measured", "target", ""],
        [[c.name, c.value, c.target, c.mark] for c in found],
        {1, 2},
    )
    lines += ["", "## How it was measured", ""]
    lines += settings(plan, env, methodology)
    return "\n".join(lines) + "\n"


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
        "(benchmarks/share.py; benchmarks/callback_cost.py takes the share apart hook by hook). "
        "Reported, not checked.",
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
