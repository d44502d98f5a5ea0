"""What this machine computes fastest, decided once at start-up.

``trainer.precision: auto`` (conf/trainer/default.yaml) becomes ``bf16-mixed`` where the hardware
multiplies bf16 natively, else ``32-true``. bf16 autocast runs the matrix products and
convolutions in bfloat16 and keeps weights, batch norm and the loss in float32: on an AVX512-BF16
CPU it trains the networks here markedly faster than float32 (docs/speed.md). Where the CPU
lacks the instructions, bf16 is emulated and slower than float32, hence the check rather than
bf16 everywhere.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_lit import compat
from mnist_lit.callbacks.idle import skip_empty_batch_hooks

log = logging.getLogger(__name__)

#: what ``trainer.precision`` may say besides Lightning's own values
AUTO = "auto"
BF16 = "bf16-mixed"
FP32 = "32-true"


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX (Intel Cooper Lake+, AMD Zen 4+)."""
    return compat.cpu_has_native_bf16(torch.cpu)


def gpu_has_native_bf16() -> bool:
    """True on CUDA GPUs with bf16 tensor cores (Ampere and later)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: object, accelerator: object) -> object:
    """``trainer.precision`` as Lightning takes it: ``auto`` is decided here, anything else kept.

    ``accelerator`` is the trainer's: ``auto`` means a CUDA GPU when there is one, as Lightning
    picks it (another accelerator, such as Apple's ``mps``, gets float32).
    """
    if str(precision) != AUTO:
        return precision
    name = str(accelerator)
    if name in ("gpu", "cuda") or (name == AUTO and torch.cuda.is_available()):
        return BF16 if gpu_has_native_bf16() else FP32
    if name == "cpu" or (name == AUTO and not torch.backends.mps.is_available()):
        return BF16 if cpu_has_native_bf16() else FP32
    return FP32


def skip_gpu_probe_without_gpu() -> None:
    """On a machine without a CUDA GPU, stop every optimizer step from probing for one.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (so that a probe does not
    initialize CUDA before a fork). Adam and AdamW then ask ``torch.cuda.is_available()`` at every
    ``step()``, which with that variable tries to load the NVIDIA driver's NVML library afresh each
    time, where there is no driver. With no GPU there is nothing a fork could break, so torch's
    plain check (no library loading) is used instead.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


def skip_nan_filling() -> None:
    """Keep deterministic algorithms, but stop torch filling every new tensor with NaN first.

    ``trainer.deterministic`` turns on ``torch.use_deterministic_algorithms``, which by default
    also fills each ``torch.empty`` result with NaN, so that a kernel that read memory it never
    wrote would give the same (NaN) result each time: a debugging aid. Correct kernels write
    before they read, so the numbers are the same without it (tests/test_resume.py and
    the integration tests compare runs to the last digit); the filling costs a noticeable share
    of every training step on the CPU (docs/speed.md).
    """
    # a property of the module (torch/utils/deterministic.py) that type checkers do not see
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]


def instantiate_trainer(trainer_cfg: DictConfig, **kwargs: Any) -> L.Trainer:
    """``instantiate(trainer_cfg, **kwargs)``, with ``precision: auto`` decided for this machine
    and the per-step costs above gone (and those of the callbacks' empty batch hooks)."""
    skip_gpu_probe_without_gpu()
    precision = kwargs.pop("precision", trainer_cfg.get("precision"))
    if precision is not None:
        accelerator = kwargs.get("accelerator", trainer_cfg.get("accelerator", AUTO))
        kwargs["precision"] = resolve_precision(precision, accelerator)
        if str(precision) == AUTO:
            log.info("trainer.precision=auto: %s on this machine", kwargs["precision"])
    trainer = instantiate(trainer_cfg, **kwargs)
    skip_nan_filling()  # after the Trainer: its `deterministic` switches the algorithms on
    # after the Trainer too: it adds callbacks of its own (model summary, progress bar)
    skip_empty_batch_hooks(trainer.callbacks)
    return trainer
