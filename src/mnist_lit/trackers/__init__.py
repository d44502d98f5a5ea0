"""The trackers extra (``pip install -e '.[trackers]'``): ``logger=mlflow`` and ``logger=wandb``.

Each logger gets what it needs from its own arguments (``conf/logger/mlflow.yaml``,
``wandb.yaml``) and Hydra's runtime, so the core builds it like any logger; it keeps its tracker
run's ids in ``<run dir>/trackers.json`` (``resume=`` goes on with the same runs) and, at the
run's end, records the run's files (docs/tracking.md).
"""

from mnist_lit.trackers.mlflow_logger import TrackedMLFlowLogger
from mnist_lit.trackers.run import TRACKERS_FILE
from mnist_lit.trackers.wandb_logger import TrackedWandbLogger

__all__ = ["TRACKERS_FILE", "TrackedMLFlowLogger", "TrackedWandbLogger"]
