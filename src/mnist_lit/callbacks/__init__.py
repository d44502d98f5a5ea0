"""Lightning callbacks: one module per concern. Add one here, plus a YAML in ``conf/callbacks/``."""

from mnist_lit.callbacks.images import SampleBatchImages, TestReportImages
from mnist_lit.callbacks.training import (
    ChannelsLast,
    ExactResume,
    StartupTime,
    StepCheckpoint,
    StopAtTarget,
)

__all__ = [
    "ChannelsLast",
    "ExactResume",
    "SampleBatchImages",
    "StartupTime",
    "StepCheckpoint",
    "StopAtTarget",
    "TestReportImages",
]
