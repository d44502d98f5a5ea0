"""What the benchmark runs: the project's pipeline, Lightning alone, the plain loop, the
pytorch/examples pipeline, a default run and eval.py's path (part 3's recipes:
time_to_accuracy.py)."""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import sys
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from timing import (
    Plan,
    StepWindow,
    accuracy_of,
    run_for_peak_rss,
    seconds_of_passes,
    seconds_of_steps,
)
from torch import Tensor, nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from mnist_lit.checkpoints import load_checkpoint
from mnist_lit.config import CONFIG_DIR, PROJECT_ROOT, check
from mnist_lit.train import RESULTS_FILE, build_model, build_trainer, resolve_precision

#: conf/paths/default.yaml's data_dir: the project's pipelines and torchvision's MNIST share it
DATA_DIR = PROJECT_ROOT / "data"
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
#: what a run needs to write ``startup_seconds`` (launch to first step) into its metrics.json:
#: the StartupTime callback, not in the default list (conf/callbacks/startup_time.yaml)
WITH_STARTUP_TIME = "callbacks=[default,startup_time]"


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
    check(cfg)
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


# ------------------------------------------------------------- parts 1 and 2: throughput


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


# ---------------------------------------------------------- part 4: evaluation and memory


def default_run(plan: Plan, run_dir: Path) -> dict[str, Any]:
    """``python train.py trainer.max_epochs=1`` in a subprocess: its peak RSS, times, test acc,
    and its launch to first step (the ``startup_time`` callback added for it)."""
    command = [
        sys.executable,
        "train.py",
        "trainer.max_epochs=1",
        WITH_STARTUP_TIME,
        *plan.default_run_extra,
    ]
    log_path = run_dir.with_suffix(".log")
    usage = run_for_peak_rss([*command, f"hydra.run.dir={run_dir}"], PROJECT_ROOT, log_path)
    if usage["returncode"] != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({usage['returncode']}): see {log_path}")
    summary = json.loads((run_dir / RESULTS_FILE).read_text())
    return {
        "command": " ".join(["python", *command[1:]]),
        "peak_rss_bytes": usage["peak_rss_bytes"],
        "wall_s": usage["wall_s"],
        "fit_s": summary["fit_seconds"],
        "startup_s": summary.get("startup_seconds"),
        "test_acc": summary["metrics"].get("test/acc"),
        "best_ckpt": summary["best_ckpt"],
        "log": str(log_path),
    }


def eval_throughput(plan: Plan, ckpt_path: str, run_dir: Path, log_path: Path) -> dict[str, Any]:
    """Test-set images/s of a trained model, through eval.py's path and as bare forward passes."""
    cfg = compose_config("eval", ["trainer=cpu", f"ckpt_path={ckpt_path}"], run_dir)
    with library_output_to(log_path):
        model = load_checkpoint(cfg.ckpt_path, data_cfg=cfg.data)  # as eval.py loads it
        datamodule = instantiate(cfg.data)
        limit = {"limit_test_batches": plan.eval_batches} if plan.eval_batches else {}
        # eval.py's trainer (eval.yaml names no callbacks or logger); its progress bar is output,
        # not evaluation: off
        trainer = build_trainer(cfg, enable_progress_bar=False, **limit)

        accuracies: list[float] = []

        def one_test_pass() -> None:
            results = trainer.test(model, datamodule=datamodule, verbose=False)
            accuracies.append(float(results[0]["test/acc"]))

        def one_forward_pass() -> None:
            with trainer.precision_plugin.forward_context():  # what trainer.test runs under
                accuracy_of(model, islice(datamodule.test_dataloader(), plan.eval_batches))

        # the test pass's warm-up also sets the data module up
        test_seconds = seconds_of_passes(one_test_pass, plan.eval_repeats)
        forward_seconds = seconds_of_passes(one_forward_pass, plan.eval_repeats)
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
