"""Shared by both layers: quick-run overrides, composing a config as a run would, the real CLI.

``tests/unit``: fast, synthetic data, in-process (``make test-unit``).
``tests/integration``: real MNIST subsets, the real command lines (``-m integration``).
"""

from __future__ import annotations

import json
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
    # one count whatever the load: a different count changes the numbers tests compare
    "callbacks.cpu_threads.threads=1",
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


#: the metadata export.py writes into an ONNX file that predict.py and serve.py read
ONNX_METADATA = {
    "dataset": "mnist",
    "classes": json.dumps([str(k) for k in range(10)]),
    "box_size": "20",
}


def onnx_file(
    path: Path,
    *,
    input_shape: Sequence[int | str] = ("batch", 1, 28, 28),
    outputs: int = 10,
    output_shape: Sequence[int | str] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """A tiny ONNX classifier written to ``path`` in seconds, no checkpoint or export needed:
    ``logits = flatten(pixels) @ W`` with ``W`` of ``[pixels per image, outputs]`` (a fixed
    pattern), ``export.py``'s metadata unless ``metadata`` replaces it. Each argument can make
    it a file ``export.py`` never writes: another input shape, another number of logits, an
    output shape it declares but does not give, bad metadata."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    features = int(np.prod([d for d in input_shape[1:] if isinstance(d, int)]))
    weights = np.linspace(-1, 1, features * outputs, dtype=np.float32).reshape(features, outputs)
    declared = output_shape if output_shape is not None else (input_shape[0], outputs)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["pixels"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, list(declared))],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime of every supported version reads
    helper.set_model_props(model, ONNX_METADATA if metadata is None else metadata)
    onnx.save(model, path)
    return path
