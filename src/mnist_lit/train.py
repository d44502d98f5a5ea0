"""``python train.py [overrides]``: fit a model, test its best checkpoint, return the metric.

Everything comes from ``conf/train.yaml`` and its groups; see ``python train.py --help``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import cast

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, open_dict

from mnist_lit.callbacks import StartupTime
from mnist_lit.checkpoints import checkpoint_step
from mnist_lit.classifier import LitClassifier
from mnist_lit.cli import built_from
from mnist_lit.config import plain_dict
from mnist_lit.console import print_config_tree, quiet_known_noise
from mnist_lit.errors import UserError
from mnist_lit.files import atomic_write_bytes
from mnist_lit.hardware import instantiate_trainer
from mnist_lit.loggers import build_loggers, finish_tracking, log_hparams, run_tags
from mnist_lit.processes import parallel_jobs, processes_of_this_job
from mnist_lit.report import RUN_SUMMARY_FILE
from mnist_lit.runs import accept_resumed_config, requeued_checkpoint

#: the order groups appear in the printed config tree
TREE_ORDER = ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")


def build_model(cfg: DictConfig) -> LitClassifier:
    """The LightningModule from the ``model``, ``optimizer`` and ``scheduler`` groups."""
    return LitClassifier(
        net=plain_dict(cfg.model),
        optimizer=plain_dict(cfg.optimizer),
        scheduler=plain_dict(cfg.scheduler) if cfg.scheduler else None,
    )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer with the callbacks and loggers that the config names (``null`` ones dropped)."""
    with built_from("callbacks"):
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    resumed_at = checkpoint_step(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    with built_from("trainer"):
        return instantiate_trainer(
            cfg.trainer, callbacks=callbacks, logger=build_loggers(cfg, resumed_at) or False
        )


def train(cfg: DictConfig) -> float | None:
    """Fit, test the best checkpoint, log hparams and final metrics, return the optimized metric.

    With DDP every rank runs this; only rank 0 prints and writes the run's files.
    """
    quiet_known_noise()
    output_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set from the environment, at import
        print_config_tree(cfg, save_to=output_dir / "config_tree.txt", order=TREE_ORDER)
    L.seed_everything(cfg.seed, workers=True)

    with built_from("data"):
        datamodule = instantiate(cfg.data)
    with built_from("model"):
        model = build_model(cfg)
    if cfg.get("compile"):  # Lightning trains and checkpoints the compiled module as the plain one
        model = cast(LitClassifier, torch.compile(model))
    if not cfg.get("ckpt_path") and (requeued := requeued_checkpoint(output_dir)):
        with open_dict(cfg):  # a SLURM sweep job run again after its preemption (processes.py)
            cfg.ckpt_path = requeued
    trainer = build_trainer(cfg)
    if trainer.world_size > 1 and parallel_jobs() > 1:
        # Lightning starts the extra ranks by re-running the main script, and a joblib worker's
        # main script is joblib's own
        raise UserError(
            "DDP (trainer=ddp) cannot run inside hydra/launcher=parallel: use the default "
            "launcher, which runs one job at a time, each with all its ranks"
        )

    if trainer.is_global_zero:
        accept_resumed_config(output_dir)
    startup = _startup_time(trainer)
    with processes_of_this_job(trainer, output_dir):
        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_seconds = time.perf_counter() - started
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if trainer.is_global_zero:
            fit_metrics, fit_seconds = fit_results(output_dir, fit_metrics, fit_seconds)

        ckpt = trainer.checkpoint_callback
        best_ckpt = ckpt.best_model_path if isinstance(ckpt, ModelCheckpoint) else ""
        test_metrics: dict[str, float] = {}
        if cfg.get("test"):
            # test the best checkpoint, not the last weights (fast_dev_run saves none)
            results = trainer.test(model, datamodule=datamodule, ckpt_path=best_ckpt or None)
            test_metrics = {k: float(v) for k, v in results[0].items()} if results else {}

    metrics = {**fit_metrics, **test_metrics}
    optimized = metrics.get(cfg.optimized_metric)
    if not trainer.is_global_zero:
        return optimized
    log_hparams(trainer.loggers, cfg, metrics, step=trainer.global_step)
    summary = {
        "overrides": _task_overrides(),
        "seed": cfg.seed,
        "tags": run_tags(cfg),
        "metrics": metrics,
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "startup_seconds": round(startup.seconds, 2) if startup and startup.seconds else None,
        "best_ckpt": best_ckpt,
    }
    atomic_write_bytes(output_dir / RUN_SUMMARY_FILE, json.dumps(summary, indent=2).encode())
    finish_tracking(trainer.loggers, output_dir, best_ckpt)
    model_name = HydraConfig.get().runtime.choices.get("model") if HydraConfig.initialized() else ""
    print(
        f"[mnist-lit] model={model_name} "
        f"test/acc={test_metrics.get('test/acc', float('nan')):.4f} "
        f"{cfg.optimized_metric}={optimized if optimized is None else round(optimized, 4)} "
        f"best_ckpt={best_ckpt or '(none saved)'} run_dir={output_dir}"
    )
    return optimized


#: what a fit measured, kept until the run's results are written (``fit_results``)
FIT_RESULTS_FILE = "fit_metrics.json"


def _startup_time(trainer: L.Trainer) -> StartupTime | None:
    """The ``startup_time`` callback, if the config has one: found before ``fit``, which it leaves
    once it has measured."""
    callbacks = trainer.callbacks  # type: ignore[attr-defined]  # set by Lightning at build time
    return next((c for c in callbacks if isinstance(c, StartupTime)), None)


def fit_results(
    run_dir: Path, metrics: dict[str, float], seconds: float
) -> tuple[dict[str, float], float]:
    """Keep what a fit measured in ``fit_metrics.json`` before testing; a resumed fit that had
    nothing left to do (killed during its test, or finished) gets those figures back."""
    path = run_dir / FIT_RESULTS_FILE
    if not metrics and path.is_file():
        saved = json.loads(path.read_text())
        return saved["metrics"], saved["fit_seconds"]
    atomic_write_bytes(path, json.dumps({"metrics": metrics, "fit_seconds": seconds}).encode())
    return metrics, seconds


def _task_overrides() -> list[str]:
    """The command-line overrides of this job (a sweep job's own values included)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
