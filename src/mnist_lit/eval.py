"""``python eval.py ckpt_path=<file.ckpt> [data=...]``: test a saved checkpoint on the test set."""

from __future__ import annotations

import sys

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_lit.checkpoints import CheckpointError, dataset_of_config, load_checkpoint
from mnist_lit.config import CONFIG_DIR, check_command_line, validate_or_exit
from mnist_lit.console import quiet_known_noise
from mnist_lit.data.sources import DataFetchError
from mnist_lit.hardware import instantiate_trainer

__all__ = ["evaluate", "load_checkpoint", "main"]  # load_checkpoint: moved to checkpoints.py


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint on the test split and return its metrics."""
    validate_or_exit(cfg)
    quiet_known_noise()
    # first: a bad checkpoint is then the one line printed
    model = load_checkpoint(cfg.ckpt_path, dataset=dataset_of_config(cfg.data))
    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    trainer = instantiate_trainer(cfg.trainer, logger=False)
    results = trainer.test(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in results[0].items()}
    print(
        f"[mnist-lit] ckpt={cfg.ckpt_path} test/acc={metrics['test/acc']:.4f} "
        f"test/loss={metrics['test/loss']:.4f}"
    )
    return metrics


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        evaluate(cfg)
    except (CheckpointError, DataFetchError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Console entry point (``mnist-eval``) and what ``python eval.py`` runs."""
    check_command_line("eval", sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
