"""``python eval.py ckpt_path=<file.ckpt>``: test a saved checkpoint on MNIST's test set."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_lit.classifier import LitClassifier
from mnist_lit.config import CONFIG_DIR, check_command_line, validate_or_exit
from mnist_lit.console import quiet_known_noise
from mnist_lit.data.sources import DataFetchError


def load_checkpoint(ckpt_path: str | Path) -> LitClassifier:
    """Load a LitClassifier, with a one-line error for a missing or unreadable file."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist: pass ckpt_path=<run dir>/checkpoints/<file>.ckpt"
        )
    try:
        return LitClassifier.load_from_checkpoint(path, map_location="cpu")
    except Exception as err:  # a truncated file or a checkpoint of another program
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"checkpoint {path} is not a LitClassifier checkpoint: {reason}") from err


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint on the test split and return its metrics."""
    validate_or_exit(cfg)
    quiet_known_noise()
    L.seed_everything(cfg.seed, workers=True)
    model = load_checkpoint(cfg.ckpt_path)
    datamodule = instantiate(cfg.data)
    trainer = instantiate(cfg.trainer, logger=False)
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
    except (FileNotFoundError, ValueError, DataFetchError) as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """Console entry point (``mnist-eval``) and what ``python eval.py`` runs."""
    check_command_line("eval", sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    main()
