"""``python eval.py ckpt_path=<file.ckpt> [data=...]``: test a saved checkpoint on the test set."""

from __future__ import annotations

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig

from mnist_lit.checkpoints import load_checkpoint
from mnist_lit.train import build_trainer, built_from, quiet_known_noise


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint on the test split and return its metrics."""
    quiet_known_noise()
    model = load_checkpoint(cfg.ckpt_path, data_cfg=cfg.data)  # first: a bad file is the one line
    L.seed_everything(cfg.seed, workers=True)
    with built_from("data"):
        datamodule = instantiate(cfg.data)
    trainer = build_trainer(cfg)
    metrics = {k: float(v) for k, v in trainer.test(model, datamodule=datamodule)[0].items()}
    print(
        f"[mnist-lit] ckpt={cfg.ckpt_path} test/acc={metrics['test/acc']:.4f} "
        f"test/loss={metrics['test/loss']:.4f}"
    )
    return metrics
