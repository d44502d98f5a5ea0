"""``python train.py [overrides]``: train a model (``python train.py --help`` lists the options).

The work is ``mnist_lit.train.train``; this file only reads the command line.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # before `pip install -e .` too

import hydra
from omegaconf import DictConfig

from mnist_lit.cli import check_sweep, hydra_refusals, train_command_line
from mnist_lit.config import check
from mnist_lit.errors import checkpoint_file, reported_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    with reported_errors(unstarted_run_dir=cfg.paths.output_dir):
        check(cfg)  # before torch loads: a bad value is one line at once
        if cfg.get("ckpt_path"):
            checkpoint_file(cfg.ckpt_path)  # a wrong path too
        from mnist_lit.train import train

        return train(cfg)


if __name__ == "__main__":
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its refusals, for hydra_refusals
    with reported_errors():
        sys.argv[1:] = train_command_line(sys.argv[1:])  # resume=, DDP ranks, requeued SLURM jobs
        with hydra_refusals("train", sys.argv[1:]):
            check_sweep("train", sys.argv[1:])  # every job of a sweep, before the first runs
            main()
