"""``python predict.py ckpt_path=<checkpoint or file.onnx> images=<files or folder>``: classify
image files (the export extra; ``python predict.py --help``)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # before `pip install -e .` too

import hydra
from omegaconf import DictConfig

from mnist_lit.cli import hydra_refusals
from mnist_lit.errors import reported_errors
from mnist_lit.export import check_predict


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    with reported_errors(unstarted_run_dir=cfg.paths.output_dir):
        check_predict(cfg)  # a bad value or model: one line before any image is read
        from mnist_lit.export.predict import predict

        predict(cfg)


if __name__ == "__main__":
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its refusals, for hydra_refusals
    with reported_errors(), hydra_refusals("predict", sys.argv[1:]):
        main()
