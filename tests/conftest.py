"""Shared by both layers: quick-run overrides, composing a config as a run would, the real CLI.

``tests/unit``: fast, synthetic data, in-process (``make test-unit``).
``tests/integration``: real MNIST subsets, the real command lines (``-m integration``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mnist_lit.config import CONFIG_DIR, PROJECT_ROOT
from mnist_lit.data import MNIST
from mnist_lit.data.download import ensure_dataset

#: the repo's data dir: tests share the cached download with `make data` / `make train`
DATA_DIR = PROJECT_ROOT / "data"

#: overrides that keep a training run to seconds on 2 cores
QUICK = [
    "trainer=cpu",
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=8",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "++trainer.enable_progress_bar=false",
    "trainer.log_every_n_steps=2",
    "callbacks.progress_bar=null",
]


@pytest.fixture(scope="session")
def mnist_data_dir() -> Path:
    """Real MNIST in data/MNIST/raw, fetched and verified once by ``ensure_dataset``.

    (Integration tests only: ``tests/unit/conftest.py`` refuses it.)
    """
    ensure_dataset(MNIST, DATA_DIR / MNIST.raw_subdir)
    return DATA_DIR


def compose_config(
    config_name: str, overrides: Sequence[str], output_dir: Path, data_dir: Path = DATA_DIR
) -> DictConfig:
    """Compose a config as ``python <config_name>.py`` would, with runs under ``output_dir``.

    Also sets what Hydra sets at run time (``${hydra:runtime.output_dir}`` resolves) and makes
    it the current Hydra config, as it is inside a run.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name=config_name):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.paths.data_dir = str(data_dir)
        cfg.paths.log_dir = str(output_dir.parent)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_cli(
    script: str, *args: str, cwd: Path = PROJECT_ROOT, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``python <script> args`` from the repo root as a user would (integration tests)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, str(PROJECT_ROOT / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def error_line(stderr: str, alone: bool = True) -> str:
    """The one ``error: ...`` line a refused command prints on stderr, and no traceback.

    ``alone``: nothing else on stderr (a command refused before any work); otherwise the log
    lines of a run that started may come before it.
    """
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, f"expected one 'error:' line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    if alone:
        assert lines == errors, f"expected only the error line on stderr, got:\n{stderr}"
    return errors[0]
