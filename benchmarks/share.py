"""The project's own share of a training step, inside one fit: blocks of steps take turns
between the project's callbacks and logger and Lightning alone's (make bench's part 2, a reported
figure; ``callback_cost.py`` prints it too, and what each callback costs).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary
from pipelines import compose_config, library_output_to, throughput_overrides

from mnist_lit.callbacks.training import ChannelsLast
from mnist_lit.train import build_model, build_trainer


class AlternateSides(L.Callback):
    """Every ``block`` steps, switches the trainer between the project's callbacks and logger
    and Lightning alone's, and keeps each block's mean step time. First in the list, so its own
    cost is the same on both sides.

    The first ``settle`` steps after a switch are left out: the second step after a switch to
    the project's side is slower (benchmarks/README.md), a cost a run that never switches does
    not pay. So is the first step of an epoch, which comes after validation.
    """

    def __init__(self, block: int, settle: int) -> None:
        self.block, self.settle = block, settle
        self.sides: dict[str, tuple[list[L.Callback], list[Any]]] = {}
        self.side = "project"
        self.block_means: list[tuple[str, float]] = []
        self._steps: list[float] = []
        self._last: float | None = None
        self._count = 0
        #: every step's seconds (the warm-up pair of blocks left out) by its place in its block
        self.by_place: dict[str, list[list[float]]] = {
            side: [[] for _ in range(block)] for side in ("project", "alone")
        }

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        callbacks = list(trainer.callbacks)  # type: ignore[attr-defined]
        alone = [self, *(c for c in callbacks if isinstance(c, (ChannelsLast, ModelSummary)))]
        alone.append(next(c for c in callbacks if isinstance(c, ModelCheckpoint)))
        self.sides = {"project": (callbacks, list(trainer.loggers)), "alone": (alone, [])}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = time.perf_counter()
        self._count += 1
        settled = self._count % self.block > self.settle or self._count % self.block == 0
        if self._last is not None and batch_idx:
            if settled:
                self._steps.append(now - self._last)
            if self._count > 2 * self.block:
                place = (self._count - 1) % self.block
                self.by_place[self.side][place].append(now - self._last)
        if self._count % self.block == 0:
            if self._steps:
                self.block_means.append((self.side, statistics.fmean(self._steps)))
            self._steps = []
            self.side = "alone" if self.side == "project" else "project"
            trainer.callbacks, trainer.loggers = (list(x) for x in self.sides[self.side])  # type: ignore[attr-defined]
        self._last = time.perf_counter()


@dataclass
class Share:
    """The project's share of a step inside one fit, from pairs of blocks taken in turn."""

    model: str
    pairs: int
    block: int
    project_ms: float  # a step with the project's callbacks and logger (median of its blocks)
    alone_ms: float  # with Lightning alone's
    share_pct: float  # the median difference of a pair, over the project's step
    by_place_ms: dict[str, list[float]]  # each side's median step at each place after a switch

    def summary(self) -> str:
        return (
            f"{self.model.upper()}: a step {self.project_ms:.3f} ms with the project's callbacks"
            f" and logger, {self.alone_ms:.3f} ms with Lightning alone's ({self.pairs} pairs of"
            f" {self.block}-step blocks): the project's share {self.share_pct:.1f} %"
        )


class ShareRun(NamedTuple):
    """How the share is measured for one model: epochs of its fit, batches of an epoch (None:
    all), steps a block, and steps left out after each switch."""

    epochs: int
    batches: int | None
    block: int
    settle: int


def share_in_fit(model: str, run: ShareRun, out: Path) -> Share:
    """The project's share of a ``model`` step inside one fit, as make bench trains (its
    threads; the first pair of blocks, a warm-up, left out)."""
    overrides = [o for o in throughput_overrides(model, 1) if "train_batches" not in o]
    if run.batches is not None:
        overrides.append(f"+trainer.limit_train_batches={run.batches}")
    cfg = compose_config("train", [*overrides, f"trainer.max_epochs={run.epochs}"], out)
    L.seed_everything(cfg.seed, verbose=False)
    out.mkdir(parents=True, exist_ok=True)
    with library_output_to(out / "library_output.log"):
        datamodule = instantiate(cfg.data)
        trainer = build_trainer(cfg)
        alternate = AlternateSides(run.block, run.settle)
        trainer.callbacks.insert(0, alternate)  # type: ignore[attr-defined]
        trainer.fit(build_model(cfg), datamodule=datamodule)
    means = alternate.block_means[2:]
    project = [s for side, s in means if side == "project"]
    alone = [s for side, s in means if side == "alone"]
    pairs = min(len(project), len(alone))
    differences = [p - a for p, a in zip(project[:pairs], alone[:pairs], strict=True)]
    project_s = statistics.median(project[:pairs])
    return Share(
        model=model,
        pairs=pairs,
        block=run.block,
        project_ms=project_s * 1e3,
        alone_ms=statistics.median(alone[:pairs]) * 1e3,
        share_pct=statistics.median(differences) / project_s * 100,
        by_place_ms={
            side: [statistics.median(steps) * 1e3 if steps else math.nan for steps in places]
            for side, places in alternate.by_place.items()
        },
    )


#: make bench's share figure: short blocks, so that the two sides of a pair are timed within
#: 0.05 s (MLP) or 0.4 s (CNN) of each other; the MLP's steps are short, so it runs more epochs
SHARE_RUNS = {"mlp": ShareRun(6, None, 10, 2), "cnn": ShareRun(2, None, 10, 2)}
