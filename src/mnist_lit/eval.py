"""``python eval.py ckpt_path=<file.ckpt> [data=...]``: test a saved checkpoint on the test set."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_lit.checkpoints import load_checkpoint
from mnist_lit.cli import built_from
from mnist_lit.console import quiet_known_noise
from mnist_lit.hardware import instantiate_trainer


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint on the test split and return its metrics."""
    quiet_known_noise()
    # first: a bad checkpoint is then the one line printed
    model = load_checkpoint(cfg.ckpt_path, data_cfg=cfg.data)
    L.seed_everything(cfg.seed, workers=True)
    with built_from("data"):
        datamodule = instantiate(cfg.data)
    with built_from("trainer"):
        trainer = instantiate_trainer(cfg.trainer, logger=False)
    results = trainer.test(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in results[0].items()}
    print(
        f"[mnist-lit] ckpt={cfg.ckpt_path} test/acc={metrics['test/acc']:.4f} "
        f"test/loss={metrics['test/loss']:.4f}"
    )
    return metrics
