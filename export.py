"""``python export.py ckpt_path=<file.ckpt> [format=onnx|torchscript]``: a checkpoint as a file
that runs without this code (the export extra; ``python export.py --help``)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # before `pip install -e .` too

import hydra
from omegaconf import DictConfig

from mnist_lit.cli import hydra_refusals
from mnist_lit.errors import reported_errors
from mnist_lit.export import check_export


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    with reported_errors(unstarted_run_dir=cfg.paths.output_dir):
        check_export(cfg)  # never onto the checkpoint it reads: refused before any work
        from mnist_lit.export.export import export

        export(cfg)


if __name__ == "__main__":
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its refusals, for hydra_refusals
    with reported_errors(), hydra_refusals("export", sys.argv[1:]):
        main()
