"""The export extra (``pip install -e '.[export]'``): a checkpoint as ONNX or TorchScript
(``export.py``), predictions for image files (``predict.py``), and the predictors both use and
the server serves (``predictors.py``, ``preprocess.py``). docs/predict-export.md.

Below: the types and ranges of ``conf/predict.yaml`` and ``conf/export.yaml``'s own keys.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mnist_lit.config import Count, Node, Options, Positive


class Preprocess(Node):
    """``predict.preprocess``: ``preprocess.py``."""

    box_size: Annotated[int, Field(ge=1, le=28)] | None
    threshold: Annotated[float, Field(gt=0, lt=1)]


class PredictOptions(Options):
    ckpt_path: str
    images: str | list[str]
    output: Annotated[str, Field(pattern=r"(?i)\.(csv|json)$")] | None
    batch_size: Count
    preprocess: Preprocess


class ExportOptions(Options):
    ckpt_path: str
    format: Literal["onnx", "torchscript"]
    output: str | None
    verify: bool
    atol: Positive
    batch_size: Count
    threads: Count | None
