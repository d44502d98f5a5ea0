"""Loggers: built from ``conf/logger``, kept intact on resume, given each run's hyper-parameters."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf


def build_loggers(cfg: DictConfig, resumed_at: int | None) -> list[Logger]:
    """The loggers the config names (``null`` ones dropped); ``resumed_at``: the resumed step."""
    return [build_logger(lg, resumed_at) for lg in (cfg.get("logger") or {}).values() if lg]


def build_logger(logger_cfg: DictConfig, resumed_at: int | None) -> Logger:
    """A logger; when resuming, one that keeps what the stopped run logged.

    TensorBoard hides what the stopped run logged after its checkpoint (those steps are trained
    and logged again; ``purge_step`` keeps one copy of each). ``CSVLogger`` deletes the
    ``metrics.csv`` it finds, so a resumed run writes its own beside it, in
    ``csv/resumed_at_step_<N>/``.
    """
    if resumed_at is not None and logger_cfg._target_.endswith("TensorBoardLogger"):
        return instantiate(logger_cfg, purge_step=resumed_at)
    if resumed_at is not None and logger_cfg._target_.endswith("CSVLogger"):
        version = f"{logger_cfg.get('version') or ''}/resumed_at_step_{resumed_at:07d}"
        return instantiate(logger_cfg, version=version.lstrip("/"))
    return instantiate(logger_cfg)


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


def log_hparams(loggers: list[Logger], cfg: DictConfig, metrics: dict[str, float]) -> None:
    """One HPARAMS entry per run with its final metrics (under ``hp/`` so they sort together)."""
    final = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items() if k in HPARAM_METRICS}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(hparams_for_logging(cfg), metrics=final)
        else:
            logger.log_hyperparams(hparams_for_logging(cfg))
            logger.log_metrics(final)
        logger.save()
