"""``python train.py [overrides]``: fit a model, test its best checkpoint, return the metric.

Everything comes from ``conf/train.yaml`` and its groups; see ``python train.py --help``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from mnist_lit.classifier import LitClassifier
from mnist_lit.config import CONFIG_DIR, check_command_line, validate_or_exit
from mnist_lit.console import print_config_tree, quiet_known_noise
from mnist_lit.data.sources import DataFetchError
from mnist_lit.files import atomic_write_bytes
from mnist_lit.report import RUN_SUMMARY_FILE

log = logging.getLogger(__name__)

#: the order groups appear in the printed config tree
TREE_ORDER = ("data", "model", "optimizer", "scheduler", "trainer", "callbacks", "logger", "paths")


def build_model(cfg: DictConfig) -> LitClassifier:
    """The LightningModule from the ``model``, ``optimizer`` and ``scheduler`` groups."""
    return LitClassifier(
        net=OmegaConf.to_container(cfg.model, resolve=True),
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler=OmegaConf.to_container(cfg.scheduler, resolve=True) if cfg.scheduler else None,
    )


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer with the callbacks and loggers that the config names (``null`` ones dropped)."""
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)


#: final metrics shown beside the hyper-parameters in TensorBoard's HPARAMS tab
HPARAM_METRICS = ("val/acc_best", "val/loss", "train/acc", "train/loss", "test/acc", "test/loss")


def hparams_for_logging(cfg: DictConfig) -> dict[str, Any]:
    """Flat ``group/key -> value`` of what defines a run, for TensorBoard's HPARAMS tab."""
    params: dict[str, Any] = {"seed": cfg.seed, "trainer/max_epochs": cfg.trainer.get("max_epochs")}
    if HydraConfig.initialized():
        for group, choice in HydraConfig.get().runtime.choices.items():
            if group in ("model", "optimizer", "scheduler", "trainer") and choice is not None:
                params[f"{group}/choice"] = choice
    for group in ("model", "optimizer", "scheduler", "data"):
        node = OmegaConf.to_container(cfg[group], resolve=True) if cfg.get(group) else {}
        for key, value in node.items():
            if key not in ("_partial_", "data_dir"):
                scalar = isinstance(value, (int, float, str, bool))
                params[f"{group}/{key}"] = value if scalar else str(value)
    return params


def train(cfg: DictConfig) -> float | None:
    """Fit, test the best checkpoint, log hparams and final metrics, return the optimized metric."""
    validate_or_exit(cfg)
    quiet_known_noise()
    output_dir = Path(cfg.paths.output_dir)
    print_config_tree(cfg, save_to=output_dir / "config_tree.txt", order=TREE_ORDER)
    L.seed_everything(cfg.seed, workers=True)
    _share_cpu_cores()

    datamodule = instantiate(cfg.data)
    model = build_model(cfg)
    trainer = build_trainer(cfg)

    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    fit_seconds = time.perf_counter() - started
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    best_ckpt = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    test_metrics: dict[str, float] = {}
    if cfg.get("test"):
        # test the best checkpoint, not the last weights (fast_dev_run saves none)
        results = trainer.test(model, datamodule=datamodule, ckpt_path=best_ckpt or None)
        test_metrics = {k: float(v) for k, v in results[0].items()} if results else {}

    metrics = {**fit_metrics, **test_metrics}
    _log_hparams(trainer.loggers, cfg, metrics)
    optimized = metrics.get(cfg.optimized_metric)
    summary = {
        "overrides": _task_overrides(),
        "seed": cfg.seed,
        "metrics": metrics,
        "epochs": trainer.current_epoch,
        "fit_seconds": round(fit_seconds, 2),
        "best_ckpt": best_ckpt,
    }
    atomic_write_bytes(output_dir / RUN_SUMMARY_FILE, json.dumps(summary, indent=2).encode())
    model_name = HydraConfig.get().runtime.choices.get("model") if HydraConfig.initialized() else ""
    print(
        f"[mnist-lit] model={model_name} "
        f"test/acc={test_metrics.get('test/acc', float('nan')):.4f} "
        f"{cfg.optimized_metric}={optimized if optimized is None else round(optimized, 4)} "
        f"best_ckpt={best_ckpt or '(none saved)'} run_dir={output_dir}"
    )
    return optimized


def _share_cpu_cores() -> None:
    """Jobs that a parallel launcher runs side by side each get an equal share of the cores."""
    if not HydraConfig.initialized():
        return
    n_jobs = OmegaConf.select(HydraConfig.get(), "launcher.n_jobs", default=None)
    if isinstance(n_jobs, int) and n_jobs > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_jobs))


def _task_overrides() -> list[str]:
    """The command-line overrides of this job (a sweep job's own values included)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def _log_hparams(loggers: list[Logger], cfg: DictConfig, metrics: dict[str, float]) -> None:
    """One HPARAMS entry per run with its final metrics (under ``hp/`` so they sort together)."""
    final = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items() if k in HPARAM_METRICS}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams_for_logging(cfg), metrics=final)
        else:
            logger.log_hyperparams(hparams_for_logging(cfg))
            logger.log_metrics(final)
        logger.save()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _hydra_main(cfg: DictConfig) -> float | None:
    try:
        return train(cfg)
    except DataFetchError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(1) from None


def main() -> None:
    """Console entry point (``mnist-train``) and what ``python train.py`` runs."""
    check_command_line("train", sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
