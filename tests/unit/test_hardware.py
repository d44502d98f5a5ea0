"""``trainer.precision: auto`` and the per-step costs that mnist_lit.hardware removes."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from mnist_lit.hardware import instantiate_trainer, resolve_precision
from omegaconf import OmegaConf

from mnist_lit import hardware


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed", "16-mixed", 64, "32"])
@pytest.mark.parametrize("accelerator", ["cpu", "gpu", "auto"])
def test_a_precision_that_is_not_auto_is_kept(precision: object, accelerator: str) -> None:
    assert resolve_precision(precision, accelerator) == precision


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_the_cpu_is_bf16_only_where_the_cpu_has_it(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("auto", "auto") == expected  # no GPU: auto is the CPU


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_on_a_gpu_asks_the_gpu(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    monkeypatch.setattr(hardware, "gpu_has_native_bf16", lambda: native)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: not native)  # not asked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_precision("auto", "gpu") == expected
    assert resolve_precision("auto", "cuda") == expected
    assert resolve_precision("auto", "auto") == expected


def test_auto_on_another_accelerator_is_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "mps") == "32-true"


def test_native_bf16_is_what_the_cpu_flags_say() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file() or "flags" not in cpuinfo.read_text():
        pytest.skip("no /proc/cpuinfo flags to compare with")
    flags = next(
        set(line.split(":", 1)[1].split())
        for line in cpuinfo.read_text().splitlines()
        if line.startswith("flags")
    )
    assert hardware.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_the_trainer_gets_the_decided_precision_and_no_nan_filling(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)
    config = OmegaConf.create(
        {
            "_target_": "lightning.pytorch.Trainer",
            "accelerator": "cpu",
            "devices": 1,
            "precision": "auto",
            "deterministic": True,
            "default_root_dir": str(tmp_path),
        }
    )
    trainer = instantiate_trainer(config, logger=False, enable_progress_bar=False)
    assert isinstance(trainer, L.Trainer)
    assert trainer.precision == "bf16-mixed"
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is False
    # a precision passed by the caller wins over the config's
    assert instantiate_trainer(config, precision="32-true", logger=False).precision == "32-true"


def test_a_machine_without_a_gpu_stops_probing_for_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    hardware.skip_gpu_probe_without_gpu()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "0"


def test_a_machine_with_a_gpu_keeps_lightnings_fork_safe_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    hardware.skip_gpu_probe_without_gpu()
    assert os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] == "1"
