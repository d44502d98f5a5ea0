"""``python serve.py ckpt_path=<checkpoint | run dir | last | file.onnx>``: the model behind
HTTP, with a page to draw digits on (the serve extra; ``python serve.py --help``)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # before `pip install -e .` too

import hydra
from omegaconf import DictConfig

from mnist_lit.cli import hydra_refusals
from mnist_lit.config import PROJECT_ROOT
from mnist_lit.errors import reported_errors
from mnist_lit.serving import check_serve, model_command_line


@hydra.main(version_base="1.3", config_path="conf", config_name="serve")
def main(cfg: DictConfig) -> None:
    with reported_errors(unstarted_run_dir=cfg.paths.output_dir):
        model = check_serve(cfg)  # a bad value or file: one line before the server loads
        from mnist_lit.serving.server import serve

        serve(cfg, model)


if __name__ == "__main__":
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its refusals, for hydra_refusals
    with reported_errors():  # a run dir or `last` becomes its checkpoint file
        sys.argv[1:] = model_command_line(sys.argv[1:], PROJECT_ROOT / "logs" / "train")
        with hydra_refusals("serve", sys.argv[1:]):
            main()
