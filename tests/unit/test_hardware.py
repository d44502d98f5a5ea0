"""``trainer.precision: auto`` (``train.resolve_precision``) and the Trainer train.py builds."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from mnist_lit import train as hardware
from mnist_lit.train import build_trainer, resolve_precision

from ..conftest import compose_config


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
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation: native)
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
    cfg = compose_config("train", ["trainer=cpu", "trainer.deterministic=true"], tmp_path / "run")
    trainer = build_trainer(cfg)
    assert isinstance(trainer, L.Trainer)
    assert trainer.precision == "bf16-mixed"
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.utils.deterministic.fill_uninitialized_memory is False
    torch.use_deterministic_algorithms(False)
    cfg = compose_config("train", ["trainer=cpu", "trainer.precision=32-true"], tmp_path / "run")
    assert build_trainer(cfg).precision == "32-true"  # any value but auto is kept
