"""``make bench``: this template's pipeline side by side with the pytorch/examples way, one run.

Every figure is measured in this one process run, on the same machine at the same time, with the
threads, seeds and load printed beside it; nothing is carried over from an earlier run. The repeats
of the pipelines that a ratio compares are interleaved (in a rotating order), so a change in the
machine's load hits all of them alike. Four parts:

1. training samples/s: pytorch/examples' ``MNIST`` + ``DataLoader`` pipeline versus this template's
   Lightning pipeline, for the default CNN and the MLP (the same network, optimizer and batch);
2. Lightning's overhead over a plain hand-written loop on the very same in-memory batches;
3. training seconds to 99.0 % test accuracy: the pytorch/examples recipe versus ``experiment=fast``;
4. test-set images/s through ``trainer.test``, and the peak RSS of a 1-epoch default run.

``python benchmarks/bench.py [--quick] [--out DIR]`` prints the tables (markdown) and writes them to
``DIR/bench.md`` with every raw figure in ``DIR/bench.json`` (default ``logs/bench/<time>/``).
``--quick`` does a few batches of each, for the test suite: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from mnist_lit.checkpoints import dataset_of_config, load_checkpoint
from mnist_lit.config import CONFIG_DIR, PROJECT_ROOT, validate
from mnist_lit.console import quiet_known_noise
from mnist_lit.data.sources import ensure_mnist
from mnist_lit.hardware import (
    instantiate_trainer,
    resolve_precision,
    skip_gpu_probe_without_gpu,
    skip_nan_filling,
)
from mnist_lit.report import RUN_SUMMARY_FILE
from mnist_lit.train import build_model, build_trainer

#: conf/paths/default.yaml's data_dir: the project's pipelines and torchvision's MNIST share it
DATA_DIR = PROJECT_ROOT / "data"
#: the test accuracy that part 3 times
TARGET_ACC = 0.99
#: pytorch/examples' ``Normalize((0.1307,), (0.3081,))``, the same as conf/data/mnist.yaml
MEAN, STD = 0.1307, 0.3081
#: pytorch/examples' default ``--seed``; the project's side uses ``seed`` of conf/train.yaml (42)
EXAMPLES_SEED = 1
#: pytorch/examples on the CPU: its DataLoader gets ``num_workers=1, pin_memory=True,
#: shuffle=True`` only with an accelerator, so on the CPU it loads in the main process
EXAMPLES_WORKERS = 0
#: pytorch/examples leaves ``shuffle`` off on the CPU (see above); training data wants shuffling,
#: as it does on an accelerator and as the project does, so it is on here (no cost to speak of)
EXAMPLES_SHUFFLE = True
#: the pipelines of parts 1 and 2, in the order of the first repeat
PIPELINES = ("examples", "plain", "lightning", "lightning_fp32", "lightning_bare")
PIPELINE_NAMES = {
    "examples": "pytorch/examples pipeline (float32)",
    "plain": "plain loop, in-memory batches",
    "lightning": "project: `python train.py`'s Trainer",
    "lightning_fp32": "project at `trainer.precision=32-true`",
    "lightning_bare": "Lightning alone: no logger, no callbacks but channels-last",
}
#: what the project's variants of the Lightning pipeline add to the user's overrides
PIPELINE_OVERRIDES = {
    "lightning": [],
    "lightning_fp32": ["trainer.precision=32-true"],
    # the channels-last layout is kept: it is arithmetic, not per-step machinery
    "lightning_bare": ["callbacks=channels_last", "~logger"],
}
#: the progress bar is output, not training: off in every timed fit (and stated in the report)
NO_PROGRESS_BAR = ("callbacks.progress_bar=null", "+trainer.enable_progress_bar=false")
GB = 1e9

# ------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Plan:
    """How much work each part does: the full benchmark or the smoke-test sized ``--quick``."""

    quick: bool
    #: repeats of each throughput figure (the median is reported)
    repeats: int
    #: batches run before the clock starts, and batches timed, per model
    warmup: dict[str, int]
    timed: dict[str, int]
    #: the pytorch/examples recipe stops after this many epochs if it has not reached 99.0 %
    examples_max_epochs: int
    #: training batches per epoch in part 3 (None: every batch)
    tta_batches: int | None
    #: test images per accuracy evaluation in part 3 (None: the whole 10k test set)
    tta_test_images: int | None
    #: timed passes over the test set in part 4 (after one warm-up pass), and batches per pass
    eval_repeats: int
    eval_batches: int | None
    #: overrides added to the 1-epoch default run whose peak RSS is measured
    default_run_extra: tuple[str, ...] = ()
    #: DataLoader worker processes of the pytorch/examples side (``--examples-workers``)
    examples_workers: int = EXAMPLES_WORKERS


FULL = Plan(
    quick=False,
    # a CNN window of 60 batches (2 s) left medians of 3 within +-5 %: the size of the target
    repeats=5,
    warmup={"cnn": 5, "mlp": 20},
    timed={"cnn": 150, "mlp": 400},
    examples_max_epochs=6,
    tta_batches=None,
    tta_test_images=None,
    eval_repeats=3,
    eval_batches=None,
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
    default_run_extra=(
        "+trainer.limit_train_batches=8",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
    ),
)

# ------------------------------------------------------------------------------ plumbing


_STARTED = time.perf_counter()


def say(message: str) -> None:
    """Progress on stdout, with the seconds since start: the full benchmark takes minutes."""
    print(f"[bench {time.perf_counter() - _STARTED:5.0f} s] {message}", flush=True)


@contextlib.contextmanager
def library_output_to(log_path: Path) -> Iterator[None]:
    """Send Lightning's summaries, tips and warnings to a log file: the tables stay readable."""
    with (
        log_path.open("a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        yield


def compose_config(config_name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/<config_name>.yaml`` as ``python <config_name>.py`` would; runs go in
    ``output_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="bench"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):  # what Hydra sets at run time, so ${hydra:runtime.output_dir} resolves
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    validate(cfg)
    return cfg


def project_precision(cfg: DictConfig) -> object:
    """The precision the project's Trainer trains at (``trainer.precision: auto`` decided)."""
    return resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)


def as_the_project_trains(cfg: DictConfig, net: nn.Module) -> tuple[nn.Module, object]:
    """``net`` in the project's weight layout, and the precision its Trainer trains at: what the
    plain loop copies so that its difference from the Trainer is the Trainer's own."""
    if (cfg.get("callbacks") or {}).get("channels_last"):
        net = net.to(memory_format=torch.channels_last)
    return net, project_precision(cfg)


def project_optimizer(
    cfg: DictConfig, net: nn.Module, total_steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    """The config's optimizer and per-batch schedule (Adam, one-cycle) for a hand-written loop."""
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    # LitClassifier fills in total_steps the same way (from the trainer's stepping batches)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=total_steps)
    return optimizer, scheduler


def examples_dataset(data_dir: Path, train: bool) -> datasets.MNIST:
    """pytorch/examples' data set: torchvision's MNIST, a PIL image per sample, then transforms."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    return datasets.MNIST(str(data_dir), train=train, download=False, transform=transform)


def examples_loader(data_dir: Path, batch_size: int, workers: int) -> DataLoader:
    """pytorch/examples' training DataLoader, as it runs on the CPU (shuffle: see the constant)."""
    return DataLoader(
        examples_dataset(data_dir, train=True),
        batch_size=batch_size,
        shuffle=EXAMPLES_SHUFFLE,
        num_workers=workers,
    )


def accuracy_of(net: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> float:
    """Accuracy of ``net`` (eval mode, no grad) on the batches; leaves it in its former mode."""
    was_training = net.training
    net.eval()
    correct = total = 0
    with torch.inference_mode():
        for images, labels in batches:
            correct += int((net(images).argmax(dim=1) == labels).sum())
            total += len(labels)
    net.train(was_training)
    return correct / total


class Clock:
    """Seconds of training alone: stopped while the test accuracy is evaluated."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started: float | None = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self._started = None


# ------------------------------------------------------------- parts 1 and 2: throughput


def seconds_of_steps(
    net: nn.Module,
    batches: Iterable[tuple[Tensor, Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    warmup: int,
    timed: int,
    precision: object = "32-true",
) -> float:
    """Seconds of ``timed`` whole iterations (get a batch, one training step) after ``warmup``.

    The step of pytorch/examples' ``train()`` (its every-10-batches log print left out: output)
    plus the per-batch schedule step, so the work is that of the Lightning side; ``precision``
    puts the forward pass and loss under the autocast that Lightning's would.
    """
    net.train()
    iterator = iter(batches)
    start = time.perf_counter()
    for step in range(warmup + timed):
        if step == warmup:
            start = time.perf_counter()
        images, labels = next(iterator)
        optimizer.zero_grad()
        with autocast_for(precision):
            loss = F.cross_entropy(net(images), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - start


class StepWindow(L.Callback):
    """Times whole training iterations ``warmup .. warmup + timed - 1`` of a fit, end to end.

    From the end of batch ``warmup - 1`` to the end of the last timed batch: ``timed`` batch
    fetches, steps and every hook, logger and callback that runs between them.
    """

    def __init__(self, warmup: int, timed: int) -> None:
        assert warmup >= 1, "the window starts at the end of a warm-up batch"
        self.warmup, self.timed = warmup, timed
        self.seconds = math.nan
        self._start = 0.0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if idx == self.warmup - 1:
            self._start = time.perf_counter()
        elif idx == self.warmup + self.timed - 1:
            self.seconds = time.perf_counter() - self._start


def throughput_overrides(model: str, batches: int, extra: list[str] | None = None) -> list[str]:
    """The user's ``python train.py trainer=cpu model=<model> [extra]``, cut to one short epoch."""
    extra = extra or []
    # another callbacks list (callbacks=<option>) has no progress bar callback to drop
    other_list = any(o.startswith("callbacks=") for o in extra)
    no_bar = [o for o in NO_PROGRESS_BAR if not (other_list and o.startswith("callbacks."))]
    return [
        "trainer=cpu",
        f"model={model}",
        "trainer.max_epochs=1",
        f"+trainer.limit_train_batches={batches}",
        # validation is not training; one batch of it still runs after the timed window so that
        # early stopping and checkpointing, which watch val/acc, work as in a user's run
        "+trainer.limit_val_batches=1",
        *no_bar,
        *extra,
    ]


def autocast_for(precision: object) -> contextlib.AbstractContextManager[Any]:
    """The autocast that Lightning's ``precision`` puts around a training step on the CPU."""
    if str(precision) == "bf16-mixed":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if str(precision) == "16-mixed":
        return torch.autocast("cpu", dtype=torch.float16)
    return contextlib.nullcontext()


def run_pipeline(
    pipeline: str, model: str, plan: Plan, data_dir: Path, run_dir: Path, log_path: Path
) -> float:
    """Training samples/s of one pipeline, once: ``timed`` batches after ``warmup`` batches."""
    warmup, timed = plan.warmup[model], plan.timed[model]
    extra = PIPELINE_OVERRIDES.get(pipeline, [])
    cfg = compose_config("train", throughput_overrides(model, warmup + timed, extra), run_dir)
    batch_size = int(cfg.data.batch_size)
    L.seed_everything(cfg.seed, verbose=False)
    if pipeline in PIPELINE_OVERRIDES:
        with library_output_to(log_path):
            datamodule = instantiate(cfg.data)
            lit_model = build_model(cfg)
            trainer = build_trainer(cfg)
            window = StepWindow(warmup, timed)
            trainer.callbacks.append(window)
            trainer.fit(lit_model, datamodule=datamodule)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # MBs each, and not looked at
        seconds = window.seconds
    else:
        if pipeline == "examples":
            batches: Iterable[tuple[Tensor, Tensor]] = examples_loader(
                data_dir, batch_size, plan.examples_workers
            )
        else:
            datamodule = instantiate(cfg.data)
            datamodule.setup("fit")
            batches = datamodule.train_dataloader()
        assert len(batches) >= warmup + timed, "the timed window must fit in one epoch"
        net = instantiate(cfg.model)
        precision: object = "32-true"  # pytorch/examples: float32, the usual layout
        if pipeline == "plain":
            net, precision = as_the_project_trains(cfg, net)
        optimizer, scheduler = project_optimizer(cfg, net, warmup + timed)
        seconds = seconds_of_steps(net, batches, optimizer, scheduler, warmup, timed, precision)
    return timed * batch_size / seconds


def measure_throughput(plan: Plan, data_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Parts 1 and 2: samples/s of the three pipelines, repeats interleaved in a rotating order."""
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
            "bf16_speedup": medians["lightning"] / medians["lightning_fp32"],
        }
    return results


# --------------------------------------------------------- part 3: time to 99.0 % accuracy


@dataclass
class AccuracyRun:
    """Test accuracy at fixed points of a run, against training seconds alone."""

    evals: list[dict[str, float]] = field(default_factory=list)
    reached_s: float | None = None
    reached_epoch: float | None = None
    train_s: float = 0.0

    def add(self, epoch: float, seconds: float, acc: float) -> bool:
        """Record one evaluation; True once the target accuracy has been reached."""
        self.evals.append({"epoch": epoch, "train_s": seconds, "acc": acc})
        self.train_s = seconds
        if self.reached_s is None and acc >= TARGET_ACC:
            self.reached_s, self.reached_epoch = seconds, epoch
        return self.reached_s is not None


class ExamplesNet(nn.Module):
    """pytorch/examples' MNIST ``Net``: two 3x3 convs, max-pool, dropout, two linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def examples_time_to_accuracy(plan: Plan, data_dir: Path) -> AccuracyRun:
    """The pytorch/examples recipe, test accuracy every half epoch, until 99.0 % or the cap."""
    torch.manual_seed(EXAMPLES_SEED)
    train_loader = examples_loader(data_dir, 64, plan.examples_workers)
    test_set: Any = examples_dataset(data_dir, train=False)
    if plan.tta_test_images:
        test_set = Subset(test_set, range(plan.tta_test_images))
    test_loader = DataLoader(test_set, batch_size=1000, num_workers=plan.examples_workers)
    model = ExamplesNet()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    per_epoch = min(len(train_loader), plan.tta_batches or len(train_loader))
    every = math.ceil(per_epoch / 2)
    run, clock = AccuracyRun(), Clock()
    for epoch in range(plan.examples_max_epochs):
        model.train()
        clock.start()
        for done, (images, labels) in enumerate(train_loader, start=1):
            optimizer.zero_grad()
            F.nll_loss(model(images), labels).backward()
            optimizer.step()
            if done % every and done < per_epoch:
                continue
            clock.stop()
            if run.add(epoch + done / per_epoch, clock.seconds, accuracy_of(model, test_loader)):
                return run
            if done == per_epoch:
                break
            clock.start()
        scheduler.step()
    return run


class AccuracyEvery(L.Callback):
    """Test accuracy every ``1/per_epoch`` of an epoch, with the clock stopped meanwhile."""

    def __init__(
        self, per_epoch: int, test_batches: Callable[[], Iterable[tuple[Tensor, Tensor]]]
    ) -> None:
        self.per_epoch, self.test_batches = per_epoch, test_batches
        self.run, self.clock = AccuracyRun(), Clock()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.clock.start()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        total = int(trainer.num_training_batches)
        done = idx + 1
        if done % math.ceil(total / self.per_epoch) and done < total:
            return
        self.clock.stop()
        accuracy = accuracy_of(pl_module, self.test_batches())
        self.run.add(trainer.current_epoch + done / total, self.clock.seconds, accuracy)
        if done < total:
            self.clock.start()


def fast_time_to_accuracy(plan: Plan, run_dir: Path, log_path: Path) -> AccuracyRun:
    """``experiment=fast`` through the project's Trainer, test accuracy every quarter epoch."""
    overrides = ["experiment=fast", "trainer=cpu", *NO_PROGRESS_BAR]
    if plan.tta_batches:
        overrides += [
            f"+trainer.limit_train_batches={plan.tta_batches}",
            "+trainer.limit_val_batches=1",
        ]
    cfg = compose_config("train", overrides, run_dir)
    L.seed_everything(cfg.seed, verbose=False)
    with library_output_to(log_path):
        datamodule = instantiate(cfg.data)
        model = build_model(cfg)
        trainer = build_trainer(cfg)
        test_batches = math.ceil((plan.tta_test_images or 10_000) / cfg.data.eval_batch_size)
        every = AccuracyEvery(4, lambda: islice(datamodule.test_dataloader(), test_batches))
        trainer.callbacks.append(every)
        trainer.fit(model, datamodule=datamodule)
    return every.run


def measure_time_to_accuracy(plan: Plan, data_dir: Path, work_dir: Path) -> dict[str, Any]:
    """Part 3: the two recipes, each to 99.0 % test accuracy (or its cap)."""
    say("time to 99.0 %: experiment=fast through the project's Trainer")
    fast = fast_time_to_accuracy(plan, work_dir / "fast", work_dir / "library_output.log")
    say(f"experiment=fast: {_reached(fast)}")
    epochs = plan.examples_max_epochs
    say(f"time to 99.0 %: pytorch/examples recipe (at most {epochs} epoch{'s' * (epochs > 1)})")
    examples = examples_time_to_accuracy(plan, data_dir)
    say(f"pytorch/examples: {_reached(examples)}")
    return {"target_acc": TARGET_ACC, "examples": vars(examples), "fast": vars(fast)}


def _reached(run: AccuracyRun) -> str:
    if run.reached_s is None:
        return f"not reached after {run.train_s:.1f} s (best {_best(run):.2%})"
    return f"{run.reached_s:.1f} s (epoch {run.reached_epoch:.2f})"


def _best(run: AccuracyRun) -> float:
    return max((e["acc"] for e in run.evals), default=0.0)


# ---------------------------------------------------------- part 4: evaluation and memory


#: runs a command and writes its exit code and peak RSS to a file. A child started straight from
#: this process would report at least this process's RSS: Linux carries the high-water mark of the
#: parent's memory, which a forked (or vforked) child shares, over to the child's ``execve``. A
#: small interpreter in between leaves the command's own peak alone.
RSS_WRAPPER = """
import json, os, subprocess, sys
process = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(process.pid, 0)
peak = usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024  # KiB on Linux
with open(sys.argv[1], "w") as out:
    json.dump({"returncode": os.waitstatus_to_exitcode(status), "peak_rss_bytes": peak}, out)
"""


def default_run(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """``python train.py trainer.max_epochs=1`` in a subprocess: its peak RSS, times, test acc."""
    command = [sys.executable, "train.py", "trainer.max_epochs=1", *plan.default_run_extra]
    log_path, usage_path = run_dir.with_suffix(".log"), run_dir.with_suffix(".rss.json")
    wrapped = [sys.executable, "-c", RSS_WRAPPER, str(usage_path), *command]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    with log_path.open("w") as log:
        subprocess.run(
            [*wrapped, f"hydra.run.dir={run_dir}"],
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=log,
            env=env,
            check=True,
        )
    wall = time.perf_counter() - started
    usage = json.loads(usage_path.read_text())
    if usage["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({usage['returncode']}): see {log_path}")
    summary = json.loads((run_dir / RUN_SUMMARY_FILE).read_text())
    return {
        "command": " ".join(["python", *command[1:]]),
        "peak_rss_bytes": usage["peak_rss_bytes"],
        "wall_s": wall,
        "fit_s": summary["fit_seconds"],
        "test_acc": summary["metrics"].get("test/acc"),
        "best_ckpt": summary["best_ckpt"],
        "log": str(log_path),
    }


def eval_throughput(plan: Plan, ckpt_path: str, run_dir: Path, log_path: Path) -> dict[str, Any]:
    """Test-set images/s of a trained model, through eval.py's path and as bare forward passes."""
    cfg = compose_config("eval", ["trainer=cpu", f"ckpt_path={ckpt_path}"], run_dir)
    with library_output_to(log_path):
        model = load_checkpoint(cfg.ckpt_path, dataset=dataset_of_config(cfg.data))
        datamodule = instantiate(cfg.data)
        limit = {"limit_test_batches": plan.eval_batches} if plan.eval_batches else {}
        # eval.py's trainer (no logger); its progress bar is output, not evaluation: off
        trainer = instantiate_trainer(cfg.trainer, logger=False, enable_progress_bar=False, **limit)

        accuracies: list[float] = []

        def one_test_pass() -> float:
            started = time.perf_counter()
            results = trainer.test(model, datamodule=datamodule, verbose=False)
            accuracies.append(float(results[0]["test/acc"]))
            return time.perf_counter() - started

        def one_forward_pass() -> float:
            started = time.perf_counter()
            with trainer.precision_plugin.forward_context():  # what trainer.test runs under
                accuracy_of(model, islice(datamodule.test_dataloader(), plan.eval_batches))
            return time.perf_counter() - started

        one_test_pass()  # warm-up: also sets the data module up
        test_seconds = [one_test_pass() for _ in range(plan.eval_repeats)]
        one_forward_pass()
        forward_seconds = [one_forward_pass() for _ in range(plan.eval_repeats)]
    images = len(datamodule.splits["test"][0])
    if plan.eval_batches:
        images = min(images, plan.eval_batches * int(cfg.data.eval_batch_size))
    return {
        "images": images,
        "batch_size": int(cfg.data.eval_batch_size),
        "trainer_test_images_per_s": images / statistics.median(test_seconds),
        "forward_images_per_s": images / statistics.median(forward_seconds),
        "trainer_test_s": test_seconds,
        "forward_s": forward_seconds,
        "test_acc": accuracies[-1],
        "precision": str(trainer.precision),
    }


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


# ------------------------------------------------------------------------------- report


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


def pin_malloc() -> bool:
    """Keep glibc's malloc from handing memory back to the system between steps (glibc only).

    One process trains many pipelines one after another here, and how the earlier ones left the
    heap decided whether the next one's big activations came from the heap or from fresh
    ``mmap`` pages, page faults and all, every step: the same plain CNN loop took 12 or 21 ms a
    forward pass depending on what ran before it. Pinned (activations under 32 MB from the heap,
    the heap not trimmed), every pipeline runs as in a fresh ``python train.py`` process, where
    the forward pass takes the faster 12 ms (``benchmarks/step_phases.py``). False elsewhere.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def settle_process() -> bool:
    """The process-wide settings every pipeline is timed under; True if malloc got pinned."""
    malloc_pinned = pin_malloc()
    quiet_known_noise()
    # the project's trainer turns this on (trainer.deterministic=true) for the whole process;
    # on from the start, every pipeline runs under the same setting whatever the order
    torch.use_deterministic_algorithms(True)
    # the project's trainer does this too, process-wide (mnist_lit.hardware): without a GPU, no
    # optimizer step probes for one. pytorch/examples never imports Lightning, which is what
    # turns that probe on, so from the start no pipeline pays for it
    skip_gpu_probe_without_gpu()
    # and its deterministic algorithms leave out filling new tensors with NaN (a debugging aid)
    skip_nan_filling()
    return malloc_pinned


def machine_facts() -> dict[str, Any]:
    """The CPU, threads and versions the figures belong to."""
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_start": os.getloadavg()[0],
    }


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
    ensure_mnist(DATA_DIR / "MNIST" / "raw")

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
    results["time_to_accuracy"] = measure_time_to_accuracy(plan, DATA_DIR, work_dir)
    results["memory"] = measure_eval_and_memory(plan, work_dir)
    env["load_end"] = os.getloadavg()[0]
    env["torch_threads_end"] = torch.get_num_threads()
    results["seconds"] = (datetime.now() - started).total_seconds()

    found = checks(results)
    results["checks"] = [{**vars(c), "mark": c.mark} for c in found]
    report = render(results, found)
    (out / "bench.md").write_text(report)
    (out / "bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(report, end="")
    say(f"{results['seconds']:.0f} s in all; wrote {out / 'bench.md'} and {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
