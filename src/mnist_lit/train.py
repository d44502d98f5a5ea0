"""``python train.py [overrides]``: fit a model, test its best checkpoint, return the metric.

Everything comes from ``conf/train.yaml`` and its groups; see ``python train.py --help``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from mnist_lit.classifier import LitClassifier
from mnist_lit.config import (
    CONFIG_DIR,
    PROJECT_ROOT,
    check_command_line,
    exit_with_error,
    validate_or_exit,
)
from mnist_lit.console import print_config_tree, quiet_known_noise
from mnist_lit.data.sources import DataFetchError
from mnist_lit.files import atomic_write_bytes
from mnist_lit.hardware import instantiate_trainer
from mnist_lit.report import RUN_SUMMARY_FILE
from mnist_lit.resume import ResumeError, checkpoint_step, resume_command_line

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
    resumed_at = checkpoint_step(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    loggers = [_build_logger(lg, resumed_at) for lg in (cfg.get("logger") or {}).values() if lg]
    return instantiate_trainer(cfg.trainer, callbacks=callbacks, logger=loggers or False)


def _build_logger(logger_cfg: DictConfig, resumed_at: int | None) -> Logger:
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


def train(cfg: DictConfig) -> float | None:
    """Fit, test the best checkpoint, log hparams and final metrics, return the optimized metric.

    With DDP every rank runs this; only rank 0 prints and writes the run's files.
    """
    validate_or_exit(cfg)
    quiet_known_noise()
    output_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:  # set from the environment before any trainer exists
        print_config_tree(cfg, save_to=output_dir / "config_tree.txt", order=TREE_ORDER)
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    model = build_model(cfg)
    if cfg.get("compile"):  # Lightning trains and checkpoints the compiled module as the plain one
        model = torch.compile(model)
    trainer = build_trainer(cfg)
    if trainer.world_size > 1 and _parallel_jobs() > 1:
        # Lightning starts the extra ranks by re-running the main script, and a joblib worker's
        # main script is joblib's own
        exit_with_error(
            "DDP (trainer=ddp) cannot run inside hydra/launcher=parallel: use the default "
            "launcher, which runs one job at a time, each with all its ranks"
        )

    with _processes_of_this_job(trainer, output_dir):
        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_seconds = time.perf_counter() - started
        fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

        ckpt = trainer.checkpoint_callback
        best_ckpt = ckpt.best_model_path if ckpt else ""
        test_metrics: dict[str, float] = {}
        if cfg.get("test"):
            # test the best checkpoint, not the last weights (fast_dev_run saves none)
            results = trainer.test(model, datamodule=datamodule, ckpt_path=best_ckpt or None)
            test_metrics = {k: float(v) for k, v in results[0].items()} if results else {}

    metrics = {**fit_metrics, **test_metrics}
    optimized = metrics.get(cfg.optimized_metric)
    if not trainer.is_global_zero:
        return optimized
    _log_hparams(trainer.loggers, cfg, metrics)
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


#: tells a DDP rank that Lightning started by re-running this script which job dir it joins
JOB_DIR_ENV = "MNIST_LIT_DDP_JOB_DIR"
#: what Lightning's DDP launch leaves in rank 0's environment
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def _processes_of_this_job(trainer: L.Trainer, output_dir: Path) -> Iterator[None]:
    """Shares the cores among this job's processes; with DDP, lets the extra ranks join this job.

    Lightning leaves its launch variables (``LOCAL_RANK``, ``MASTER_PORT``...) in rank 0's
    environment and the process group open: the next job of a multirun in this process would take
    them as its own (start no ranks, wait for a peer that has exited). So afterwards the ranks are
    awaited, the group closed, and the environment and thread count restored.
    """
    saved_env = {k: os.environ.get(k) for k in (*_LAUNCH_ENV, "OMP_NUM_THREADS", JOB_DIR_ENV)}
    saved_threads = torch.get_num_threads()
    _share_cpu_cores(trainer)
    if trainer.world_size > 1:
        os.environ[JOB_DIR_ENV] = str(output_dir)
        log.info(
            "rank %d of %d: %d CPU threads",
            trainer.global_rank,
            trainer.world_size,
            torch.get_num_threads(),
        )
    failed = True
    try:
        yield
        failed = False
    finally:
        _stop_started_ranks(trainer, kill=failed)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        torch.set_num_threads(saved_threads)


def _stop_started_ranks(trainer: L.Trainer, kill: bool) -> None:
    """Waits for the DDP ranks that Lightning started from this process, or kills them.

    Kill when this rank failed: the others would wait for it in their next collective. Lightning's
    observer thread SIGKILLs this process when one of them ends with an error; it watches the
    launcher's own list, so that list is emptied first: a failed job of a multirun then fails
    alone, as it would without DDP, instead of taking the sweep down with it.
    """
    procs = getattr(trainer.strategy.launcher, "procs", None)
    if not procs:
        return
    started = list(procs)
    procs.clear()
    for proc in started:
        if kill:
            proc.kill()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.returncode and not kill:
            log.warning("DDP rank process %d ended with exit code %d", proc.pid, proc.returncode)


def _share_cpu_cores(trainer: L.Trainer) -> None:
    """Every process that trains on this machine gets an equal share of the cores.

    They are the jobs that a parallel launcher runs side by side, or the DDP ranks of a job: 2 ranks
    on 2 cores use 1 thread each, not 2 each. Lightning caps DDP ranks so itself, but only where
    ``OMP_NUM_THREADS`` is unset; the ranks it starts inherit the value set here. A rank started by
    a launcher (Lightning's, torchrun, SLURM) keeps the count it was given.
    """
    cluster = getattr(trainer.strategy, "cluster_environment", None)
    if cluster is not None and cluster.creates_processes_externally:
        return
    n_jobs = _parallel_jobs()
    processes = n_jobs * trainer.num_devices
    if processes == 1 or (n_jobs == 1 and "OMP_NUM_THREADS" in os.environ):
        return  # one process, or DDP with a thread count the user chose
    threads = max(1, (os.cpu_count() or 1) // processes)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _parallel_jobs() -> int:
    """How many jobs the Hydra launcher runs side by side on this machine (``n_jobs``)."""
    if not HydraConfig.initialized():
        return 1
    n_jobs = OmegaConf.select(HydraConfig.get(), "launcher.n_jobs", default=None)
    return n_jobs if isinstance(n_jobs, int) and n_jobs > 1 else 1


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
    except ResumeError as err:  # a checkpoint that cannot go on with this config
        exit_with_error(str(err))


def main() -> None:
    """Console entry point (``mnist-train``) and what ``python train.py`` runs."""
    rank_argv = _ddp_rank_argv()
    if rank_argv is None:
        try:  # `resume=<run dir>`: that run's own overrides, its dir, its newest checkpoint
            argv = resume_command_line(sys.argv[1:], PROJECT_ROOT / "logs" / "train" / "runs")
        except ResumeError as err:
            exit_with_error(str(err))
        sys.argv = [sys.argv[0], *argv]
        check_command_line("train", argv)
    else:  # rank 0 checked this config already
        sys.argv = [sys.argv[0], *rank_argv]
    _hydra_main()


def _ddp_rank_argv() -> list[str] | None:
    """For a DDP rank that Lightning started by re-running this script: the command line to use.

    Lightning re-runs rank 0's command line (for a multirun: the whole sweep, ``-m`` included)
    with ``hydra.run.dir`` set to the dir of a single run. Instead, such a rank composes the
    config that rank 0's job saved in ``<job dir>/.hydra`` and runs in that job's dir, with its
    own Hydra files and log in ``<job dir>/.pl_hydra_rank_<N>``. ``None`` for any other process.
    """
    job_dir = os.environ.get(JOB_DIR_ENV)
    local_rank = os.environ.get("LOCAL_RANK", "0")
    if not job_dir or local_rank == "0":
        return None
    rank_dir = Path(job_dir) / f".pl_hydra_rank_{local_rank}"
    rank_dir.mkdir(parents=True, exist_ok=True)  # Hydra opens the log before it makes this dir
    return [
        f"--config-path={Path(job_dir) / '.hydra'}",
        "--config-name=config",
        f'hydra.run.dir="{job_dir}"',
        f"hydra.output_subdir={rank_dir.name}",
        f'hydra.job_logging.handlers.file.filename="{rank_dir / "train.log"}"',
    ]


if __name__ == "__main__":
    main()
