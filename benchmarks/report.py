"""The benchmark's checks (each figure against its target) and its report, bench.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines import (
    EXAMPLES_SEED,
    EXAMPLES_SHUFFLE,
    EXAMPLES_WORKERS,
    PIPELINE_NAMES,
    PIPELINES,
)
from timing import GB


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
    found.append(time_to_accuracy_check(results["time_to_accuracy"]))
    peak = results["memory"]["default_run"]["peak_rss_bytes"] / GB
    found.append(
        Check("peak RSS of a 1-epoch default run", f"{peak:.2f} GB", "< 1.5 GB", peak < 1.5)
    )
    return found


def time_to_accuracy_check(tta: dict[str, Any], target: float = 10.0) -> Check:
    """examples / fast seconds to 99.0 %; a lower bound when only the examples recipe missed."""
    name = "time to 99.0 %: pytorch/examples recipe / experiment=fast"
    wanted = f">= {target:g}x (20x aimed)"
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


def render(results: dict[str, Any], found: list[Check]) -> str:
    """The whole report as markdown: what was measured, how, and the targets."""
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
    lines += ["", "## Targets", ""]
    lines += _table(
        ["check", "measured", "target", ""],
        [[c.name, c.value, c.target, c.mark] for c in found],
        {1, 2},
    )
    lines += ["", "## How it was measured", ""]
    lines += [f"- {note}" for note in notes(plan)]
    return "\n".join(lines) + "\n"


def notes(plan: dict[str, Any]) -> list[str]:
    """What each figure includes and excludes, and what is switched off, and why."""
    return [
        "**pytorch/examples pipeline**: torchvision `MNIST` with "
        "`Compose([ToTensor(), Normalize((0.1307,), (0.3081,))])` (a PIL image per sample) and "
        f"`DataLoader(batch_size, shuffle={EXAMPLES_SHUFFLE}, "
        f"num_workers={plan['examples_workers']})`. "
        "On the CPU pytorch/examples/mnist passes no `num_workers` (0, the main process) and no "
        "`shuffle` (off): it adds `num_workers=1, pin_memory=True, shuffle=True` only with an "
        f"accelerator (`--examples-workers` sets it here; {EXAMPLES_WORKERS} by default). "
        "Shuffling is on here, as on an accelerator and in the project.",
        "**Same work in parts 1 and 2**: each pipeline trains the same network (conf/model/cnn.yaml"
        ", mlp.yaml) from the same initial weights with the project's optimizer and schedule "
        "(fused Adam, one-cycle stepped per batch), with the data config's batch size. A timed "
        "window is whole iterations "
        "(get a batch, forward, loss, backward, step) after warm-up batches; the repeats of the "
        "pipelines are interleaved in a rotating order. `project / examples` is the "
        "median of `python train.py`'s Trainer over the pytorch/examples median; the overhead is "
        "(plain median / Lightning median - 1) x 100, and the time it adds to a step is "
        "batch / Lightning median - batch / plain median.",
        "**Precision and layout**: pytorch/examples trains in float32 with the usual weight "
        "layout, and so does its pipeline here. The project trains at `trainer.precision: auto`, "
        "bf16 autocast on a CPU with native bf16 (AVX512-BF16 or AMX), with channels-last conv "
        "weights (the default `channels_last` callback): the `32-true` column is the project "
        "without bf16. The plain loop runs at the project's precision (the same autocast) and "
        "with its layout, so the overhead compares like with like.",
        "**Plain loop**: a hand-written loop over the data module's own `InMemoryBatches` "
        "(`train_dataloader()`); it computes the loss and nothing else. The Lightning side also "
        "updates the epoch's `train/acc` and `train/loss` metrics (torchmetrics) every step and "
        "saves a resume checkpoint every 1000 steps, as `python train.py` does: that is in its "
        "overhead. `Lightning alone` is the same Trainer with `callbacks=channels_last ~logger` "
        "(the weight layout kept): what the framework's own loop, hooks and automatic "
        "optimization cost, the metrics included.",
        "**Lightning side**: conf/train.yaml composed with `trainer=cpu model=<model>`, built by "
        "`mnist_lit.train.build_model/build_trainer` as `python train.py` does: TensorBoard "
        "logger, checkpointing, early stopping, LR monitor and the image callbacks all on. "
        "Changed for the timed fits: the progress bar is off (it is output, not training), and "
        "each fit is one epoch cut to the warm-up and timed batches plus 1 validation batch "
        "(validation is not training; it runs after the window, so that the callbacks that "
        "watch `val/acc` work).",
        f"**Time to 99.0 %**: test accuracy on {plan['tta_test_images'] or 10_000:,} test images "
        "(eval mode, no grad) every half "
        "epoch for pytorch/examples (its `Net`, `nll_loss` on `log_softmax`, Adadelta lr 1.0, "
        "StepLR gamma 0.7 per epoch, batch 64, its DataLoader; at most "
        f"{plan['examples_max_epochs']} epoch(s)) and every quarter epoch for `experiment=fast` "
        "(the project's Trainer and callbacks, progress bar off); the clock runs only while "
        "training, and the first evaluation at >= 99.0 % gives the time. Model building and "
        "data loading before the first batch are off both clocks.",
        "**Evaluation**: eval.py's trainer (`trainer=cpu`, no logger, progress bar off) runs "
        f"`trainer.test` on the checkpoint of the default run: median of {plan['eval_repeats']} "
        "passes after 1 warm-up pass; the forward-only figure runs the same batches through the "
        "model with nothing else.",
        "**Peak RSS**: the maximum resident set size of the `train.py` process (`os.wait4` in a "
        "small launcher process, since a child of this big process would inherit its high-water "
        "mark); 1 GB = 10^9 bytes. One epoch (`trainer.max_epochs=1`), not the "
        "default 8.",
        "**Memory allocator**: this one process trains every pipeline in turn, and glibc's "
        "malloc, left to adapt, sometimes served a pipeline's activations from fresh `mmap` pages "
        "every step because of how an earlier pipeline left the heap (the same plain CNN loop "
        "then took 21 ms a forward pass instead of 12). So the benchmark pins it at the start "
        "(`mallopt`: allocations under 32 MB from the heap, no trimming), for every pipeline "
        "alike, and each runs as it does in a fresh `python train.py` process. The 1-epoch "
        "default run is such a fresh process, not pinned.",
    ]
