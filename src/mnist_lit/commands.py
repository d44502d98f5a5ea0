"""The commands: what ``python train.py`` (``mnist-train``), ``eval.py``, ``predict.py`` and
``export.py`` run.

Each hands its task to ``cli.run_entry_point`` by name, so nothing here imports torch or
Lightning: ``--help``, ``--cfg``, ``--info`` and a refused command line answer before they load.
"""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from mnist_lit.cli import ddp_rank_argv, run_entry_point
from mnist_lit.config import PROJECT_ROOT
from mnist_lit.errors import reported_errors
from mnist_lit.files import output_beside
from mnist_lit.runs import resume_command_line
from mnist_lit.schema import EXPORT_SUFFIXES
from mnist_lit.serving import model_command_line, served_file


def train() -> None:
    """``python train.py [overrides]``, ``resume=<run dir>|last`` included."""
    rank_argv = ddp_rank_argv()  # a DDP rank Lightning started: rank 0 checked the config
    argv = rank_argv or sys.argv[1:]
    if rank_argv is None:
        with reported_errors():
            argv = resume_command_line(argv, PROJECT_ROOT / "logs" / "train")
    run_entry_point("train", "mnist_lit.train:train", argv, check=rank_argv is None)


def evaluate() -> None:
    """``python eval.py ckpt_path=<file.ckpt> [overrides]``."""
    run_entry_point("eval", "mnist_lit.eval:evaluate")


def predict() -> None:
    """``python predict.py ckpt_path=<file.ckpt> images=<files or folder> [overrides]``."""
    run_entry_point("predict", "mnist_lit.predict:predict")


def export() -> None:
    """``python export.py ckpt_path=<file.ckpt> [format=onnx|torchscript] [overrides]``."""
    run_entry_point("export", "mnist_lit.export:export", check_task=_export_output)


def _export_output(cfg: DictConfig) -> None:
    """Refuse an export onto its own checkpoint before any work (``export.output_of``)."""
    output_beside(cfg.ckpt_path, cfg.output, EXPORT_SUFFIXES[cfg.format])


def serve() -> None:
    """``python serve.py ckpt_path=<checkpoint | run dir | last | file.onnx> [overrides]``."""
    with reported_errors():  # a run dir or `last` becomes its checkpoint file
        argv = model_command_line(sys.argv[1:], PROJECT_ROOT / "logs" / "train")
    run_entry_point("serve", "mnist_lit.serving.server:serve", argv, check_task=served_file)
