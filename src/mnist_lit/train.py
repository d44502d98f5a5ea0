"""``python train.py [overrides]``: fit a model, test its best checkpoint, return the metric.

Everything comes from ``conf/train.yaml`` and its groups (``python train.py --help``). With DDP
every rank runs ``train``; only rank 0 prints and writes the run's files.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from mnist_lit.callbacks.cpu_threads import CPUThreads, parallel_jobs
from mnist_lit.callbacks.training import StartupTime
from mnist_lit.classifier import LitClassifier
from mnist_lit.cli import (
    SLURM_JOB_FILE,
    requeued_checkpoint,
    slurm_job_id,
)
from mnist_lit.config import plain_dict
from mnist_lit.errors import UserError, atomic_write_bytes, first_line
from mnist_lit.processes import ResumeAccepted, one_writer, processes_of_this_job

log = logging.getLogger(__name__)

#: what the run writes at the end, and what a fit measured until then
RESULTS_FILE, FIT_RESULTS_FILE = "metrics.json", "fit_metrics.json"
#: final metrics shown beside the hyper-parameters in TensorBoard's HPARAMS tab
HPARAM_METRICS = ("val/acc_best", "val/loss", "train/acc", "train/loss", "test/acc", "test/loss")


def train(cfg: DictConfig) -> float | None:
    """Fit, test the best checkpoint, log hparams and final metrics, return the optimized metric."""
    quiet_known_noise()
    if cfg.get("ckpt_path"):  # before any output: a bad checkpoint is the one line printed
        from mnist_lit.checkpoints import check_ckpt_path

        check_ckpt_path(cfg)
    output_dir = Path(cfg.paths.output_dir)
    if rank_zero_only.rank == 0:  # type: ignore[attr-defined]  # set from the environment
        print_config(cfg, save_to=output_dir / "config_tree.txt")
    L.seed_everything(cfg.seed, workers=True)

    with built_from("data"):
        datamodule = instantiate(cfg.data)
    with built_from("model"):
        model = build_model(cfg)
        instantiate(cfg.optimizer)(params=model.parameters())  # its own checks, before any work
    if cfg.get("compile"):  # Lightning trains and checkpoints the compiled module as the plain one
        model = cast(LitClassifier, torch.compile(model))
    if not cfg.get("ckpt_path") and (requeued := requeued_checkpoint(output_dir)):
        with open_dict(cfg):  # a SLURM sweep job run again after its preemption
            cfg.ckpt_path = requeued
    trainer = build_trainer(cfg, extra=[ResumeAccepted(output_dir)])
    if trainer.world_size > 1 and parallel_jobs() > 1:  # a joblib worker's main script is joblib's
        raise UserError(
            "DDP (trainer=ddp) cannot run inside hydra/launcher=parallel: Lightning starts the "
            "extra ranks by running the main script again; use the default launcher"
        )
    if trainer.is_global_zero and (job := slurm_job_id()):  # a requeued job finds its run by it
        atomic_write_bytes(output_dir / SLURM_JOB_FILE, job.encode())

    with one_writer(output_dir, trainer), processes_of_this_job(trainer, output_dir):
        started = time.perf_counter()
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        startup = next((c for c in trainer.callbacks if isinstance(c, StartupTime)), None)  # type: ignore[attr-defined]
        fit: dict[str, Any] = {
            "threads": next(  # the CPU threads it trained with at the end (cpu_threads)
                (c.used for c in trainer.callbacks if isinstance(c, CPUThreads) and c.used),  # type: ignore[attr-defined]
                torch.get_num_threads(),
            ),
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
            "fit_seconds": round(time.perf_counter() - started, 2),
            "startup_seconds": round(startup.seconds, 2) if startup and startup.seconds else None,
        }
        if trainer.is_global_zero:
            fit = fit_results(output_dir, fit)
        ckpt = trainer.checkpoint_callback
        best_ckpt = ckpt.best_model_path if isinstance(ckpt, ModelCheckpoint) else ""
        test_metrics: dict[str, float] = {}
        if cfg.get("test"):  # the best checkpoint, not the last weights (fast_dev_run saves none)
            results = trainer.test(model, datamodule=datamodule, ckpt_path=best_ckpt or None)
            test_metrics = {k: float(v) for k, v in results[0].items()} if results else {}

    metrics = {**fit["metrics"], **test_metrics}
    optimized = metrics.get(cfg.optimized_metric)
    if not trainer.is_global_zero:
        return optimized
    summary = {
        "overrides": list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else [],
        "seed": cfg.seed,
        "tags": run_tags(cfg),
        "metrics": metrics,
        "epochs": trainer.current_epoch,
        "fit_seconds": fit["fit_seconds"],
        "startup_seconds": fit["startup_seconds"],
        "threads": fit["threads"],
        "best_ckpt": best_ckpt,
    }
    atomic_write_bytes(output_dir / RESULTS_FILE, json.dumps(summary, indent=2).encode())
    finish_logging(trainer.loggers, cfg, metrics, step=trainer.global_step)
    model_name = HydraConfig.get().runtime.choices.get("model") if HydraConfig.initialized() else ""
    tested = f"test/acc={test_metrics['test/acc']:.4f} " if "test/acc" in test_metrics else ""
    print(
        f"[mnist-lit] model={model_name} {tested}"
        f"{cfg.optimized_metric}={optimized if optimized is None else round(optimized, 4)} "
        f"best_ckpt={best_ckpt or '(none saved)'} run_dir={output_dir}"
    )
    return optimized


def build_model(cfg: DictConfig) -> LitClassifier:
    """The LightningModule from the ``model``, ``optimizer`` and ``scheduler`` groups."""
    return LitClassifier(
        net=plain_dict(cfg.model),
        optimizer=plain_dict(cfg.optimizer),
        scheduler=plain_dict(cfg.scheduler) if cfg.scheduler else None,
        label_smoothing=cfg.label_smoothing,
    )


def build_trainer(cfg: DictConfig, extra: Sequence[L.Callback] = (), **kwargs: Any) -> L.Trainer:
    """The Trainer with the callbacks and loggers the config names (``null`` ones dropped), and
    the ``extra`` callbacks of the caller's."""
    with built_from("callbacks"):
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    chosen = [c for c in (cfg.get("logger") or {}).values() if c]
    resumed_at = checkpoint_step(cfg.ckpt_path) if chosen and cfg.get("ckpt_path") else None
    with built_from("logger"):
        loggers = [build_logger(c, resumed_at) for c in chosen]
    precision = resolve_precision(
        cfg.trainer.get("precision"), cfg.trainer.get("accelerator", "auto")
    )
    with built_from("trainer"):
        trainer = instantiate(
            cfg.trainer,
            callbacks=[*callbacks, *extra],
            logger=loggers or False,
            precision=precision,
            **kwargs,
        )
    # deterministic algorithms fill each new tensor with NaN first, a debugging aid that costs a
    # share of every CPU step; correct kernels write before they read, so results are the same
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    return trainer


def build_logger(logger_cfg: DictConfig, resumed_at: int | None) -> Logger:
    """A logger; a resumed run's keeps what the stopped run logged.

    TensorBoard hides what was logged after the checkpoint (those steps are trained again;
    ``purge_step`` keeps one copy of each). ``CSVLogger`` would delete the ``metrics.csv`` it
    finds, so a resumed run writes its own beside it. The trackers (``mnist_lit.trackers``)
    find the resumed run themselves.
    """
    name = str(logger_cfg._target_).rsplit(".", 1)[-1]
    if resumed_at is not None and name == TensorBoardLogger.__name__:
        return instantiate(logger_cfg, purge_step=resumed_at)
    if resumed_at is not None and name == CSVLogger.__name__:
        version = f"{logger_cfg.get('version') or ''}/resumed_at_step_{resumed_at:07d}"
        return instantiate(logger_cfg, version=version.lstrip("/"))
    return instantiate(logger_cfg)


def checkpoint_step(ckpt_path: str | Path) -> int:
    """The training step a checkpoint was saved at (what TensorBoard events after it repeat)."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    return int(checkpoint.get("global_step", 0))


def resolve_precision(precision: Any, accelerator: Any) -> Any:
    """``trainer.precision: auto``: bf16 autocast where the hardware multiplies bf16 natively
    (GPUs from Ampere on, CPUs with AVX512-BF16 or AMX), else float32; anything else as it is.
    Emulated bf16 is slower than float32, hence the check."""
    if str(precision) != "auto":
        return precision
    name = str(accelerator)
    if name in ("gpu", "cuda") or (name == "auto" and torch.cuda.is_available()):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    else:  # another accelerator (Apple's mps): float32
        native = name in ("cpu", "auto") and cpu_has_native_bf16()
    return "bf16-mixed" if native else "32-true"


def cpu_has_native_bf16() -> bool:
    """x86 CPUs with AVX512-BF16 or AMX, as Linux lists their flags (elsewhere: no)."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & flags)


@contextmanager
def built_from(key: str) -> Iterator[None]:
    """A class's refusal of its arguments as one line naming the config key."""
    try:
        yield
    except UserError:
        raise
    except (
        InstantiationException,
        MisconfigurationException,
        TypeError,
        ValueError,
        KeyError,
        OmegaConfBaseException,
    ) as err:
        cause = err.__cause__ if err.__cause__ is not None else err  # Hydra wraps the class's error
        if isinstance(cause, UserError):  # a class's own one-line refusal (the trackers')
            raise cause from None
        reason = first_line(cause, skip="Error in call to target").rstrip(":.")
        raise UserError(
            f"{key}: {reason}: fix the value in conf/{key}/ or on the command line"
        ) from None


def fit_results(run_dir: Path, fit: dict[str, Any]) -> dict[str, Any]:
    """Keep what a fit measured (metrics, fit and start-up seconds) until the run's results are
    written; a resumed fit with nothing left to do (killed during its test, or finished) gets the
    figures back. The saved file is the run's own, but a damaged one is measured anew."""
    path = run_dir / FIT_RESULTS_FILE
    if not any(k.startswith("val/") for k in fit["metrics"]):
        try:
            saved = json.loads(path.read_text())
            if isinstance(saved, dict) and isinstance(saved.get("metrics"), dict):
                return {**fit, **{k: saved[k] for k in fit if k in saved}}
        except (OSError, ValueError):
            pass
    atomic_write_bytes(path, json.dumps(fit).encode())
    return fit


def run_tags(cfg: DictConfig) -> list[str]:
    """The run's ``tags=[...]`` (or ``tags=<one tag>``) as a list."""
    tags = cfg.get("tags") or []
    return [tags] if isinstance(tags, str) else [str(tag) for tag in tags]


def finish_logging(
    loggers: list[Logger], cfg: DictConfig, metrics: dict[str, float], step: int
) -> None:
    """The run's hyper-parameters with its final metrics (TensorBoard's HPARAMS tab), the final
    metrics for the others, then each logger finalized (a tracker uploads its artifacts)."""
    final = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items() if k in HPARAM_METRICS}
    params: dict[str, Any] = {"seed": cfg.seed, "trainer/max_epochs": cfg.trainer.get("max_epochs")}
    if tags := run_tags(cfg):
        params["tags"] = ", ".join(tags)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    for group in ("model", "optimizer", "scheduler", "trainer"):
        if choices.get(group):  # which file of the group, beside its values
            params[f"{group}/choice"] = choices[group]
    for group in ("model", "optimizer", "scheduler", "data"):
        for key, value in (plain_dict(cfg[group]) if cfg.get(group) else {}).items():
            if key not in ("_partial_", "data_dir"):
                params[f"{group}/{key}"] = (
                    value if isinstance(value, (int, float, str, bool)) else str(value)
                )
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(params, metrics=final)
        else:
            logger.log_metrics(final, step=step)
        logger.save()
        logger.finalize("success")


def print_config(cfg: DictConfig, save_to: Path) -> None:
    """Print the resolved config (Hydra's own node left out) and save it as text."""
    text = OmegaConf.to_yaml({k: v for k, v in cfg.items() if k != "hydra"}, resolve=True)
    print(text)
    save_to.parent.mkdir(parents=True, exist_ok=True)
    save_to.write_text(text)


def quiet_known_noise() -> None:
    """Hide library messages that say nothing about this run."""
    # `import lightning` gives its logger a console handler of its own and lets records go on to
    # the root's too: under Hydra (whose handlers log to the console and train.log) each INFO
    # line would be printed twice
    if logging.getLogger().hasHandlers():
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)
    # Lightning advertises a cloud logger at every start
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "litlogger" not in record.getMessage()
    )
    # batches come from memory, not DataLoader workers: the worker advice does not apply
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # Lightning 2.6 calls a pytree API that torch >= 2.10 deprecates
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # bf16 autocast keeps the weights in float32, so the summary's 32-bit size is the right one
    warnings.filterwarnings("ignore", message=r".*is not supported by the model summary.*")
