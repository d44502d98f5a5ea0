"""``python eval.py ckpt_path=<file.ckpt> [overrides]``: test a checkpoint on the test set."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # before `pip install -e .` too

import hydra
from omegaconf import DictConfig

from mnist_lit.cli import hydra_refusals
from mnist_lit.config import check
from mnist_lit.errors import checkpoint_file, reported_errors


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    with reported_errors(unstarted_run_dir=cfg.paths.output_dir):
        check(cfg)
        checkpoint_file(cfg.ckpt_path)  # a wrong path, answered before torch loads
        from mnist_lit.eval import evaluate

        evaluate(cfg)


if __name__ == "__main__":
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its refusals, for hydra_refusals
    with reported_errors(), hydra_refusals("eval", sys.argv[1:]):
        main()
