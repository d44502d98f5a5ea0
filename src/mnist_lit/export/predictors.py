"""A trained model as ``bytes -> probabilities``: what ``predict.py`` and the server run.

One ``Predictor`` holds what it takes to classify an image file: the data set's class names,
how its images are prepared (``preprocess.py``: numpy and PIL), and the model. Two kinds:

- an exported ONNX file (``export.py``), run by onnxruntime with numpy alone: torch is never
  imported, so a prediction starts in a fraction of a second;
- a checkpoint, whose network torch runs (imported only then).

Both take the prepared pixels in [0, 1] and normalize them the same way (the ONNX file has the
normalization built in), so a file gets the same answer from either.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_lit.errors import UserError
from mnist_lit.export import ONNX_SUFFIX
from mnist_lit.export.preprocess import prepare

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: the preprocessing box of each data set (``DatasetSpec.box_size``), for ONNX files that do
#: not carry it: the spec lives beside the data modules, which need torch
BOX_SIZES = {"mnist": 20, "fashion_mnist": 28}


@dataclass
class Predictor:
    """``prepare`` an image file, then ``probabilities`` of a batch of prepared images.

    Attributes:
        classes: class names, by label.
        dataset: the data set the model was trained on (``mnist``, ``fashion_mnist``).
        box_size, threshold: how ``prepare`` crops and scales (``preprocess.py``).
        run: ``[N, 1, 28, 28]`` float32 pixels in [0, 1] -> ``[N, classes]`` logits.
        source: the file it was loaded from.
    """

    classes: list[str]
    dataset: str
    box_size: int
    threshold: float
    run: Callable[[np.ndarray], np.ndarray]
    source: str

    def prepare(self, data: bytes) -> np.ndarray:
        """Image file bytes -> the ``[1, 28, 28]`` pixels the model receives (``UserError`` if
        it is no image or holds no digit)."""
        return prepare(data, box_size=self.box_size, threshold=self.threshold)

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """``[N, 1, 28, 28]`` prepared pixels -> ``[N, classes]`` probabilities (softmax)."""
        logits = self.run(np.ascontiguousarray(pixels, dtype=np.float32)).astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)


def load_predictor(
    path: str | Path,
    data_cfg: DictConfig | None = None,
    *,
    box_size: int | None = None,
    threshold: float = 0.2,
    threads: int | None = None,
) -> Predictor:
    """A ``Predictor`` from an ``.onnx`` file or a checkpoint (``UserError`` for a bad file).

    ``data_cfg``: the data config a checkpoint is checked against (its data set and class
    names); an ONNX file says its own. ``box_size``: ``None`` for the data set's own.
    ``threads``: the threads the model runs on, onnxruntime's intra-op threads or torch's
    (process-wide); ``None``: the library's default, every core.
    """
    if Path(path).suffix.lower() == ONNX_SUFFIX:
        return onnx_predictor(path, box_size=box_size, threshold=threshold, threads=threads)
    return checkpoint_predictor(
        path, data_cfg, box_size=box_size, threshold=threshold, threads=threads
    )


def onnx_predictor(
    path: str | Path,
    *,
    box_size: int | None = None,
    threshold: float = 0.2,
    threads: int | None = None,
) -> Predictor:
    """An exported ONNX file run by onnxruntime; its metadata names the classes."""
    import onnxruntime

    if not Path(path).is_file():
        raise UserError(f"ONNX file {path} does not exist: pass one that export.py wrote")
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: no warnings about unused initializers
    try:
        session = onnxruntime.InferenceSession(
            os.fspath(path), options, providers=["CPUExecutionProvider"]
        )
    except Exception as err:  # onnxruntime raises its own exception types for a bad file
        raise UserError(
            f"{path} is not an ONNX model onnxruntime can run ({type(err).__name__}): "
            "pass a file that export.py wrote"
        ) from None
    meta = session.get_modelmeta().custom_metadata_map
    if "classes" not in meta or "dataset" not in meta:
        raise UserError(f"{path} has no class names in its metadata: export it with export.py")
    input_name = session.get_inputs()[0].name

    def run(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: pixels})[0])

    dataset = meta["dataset"]
    box = box_size or int(meta.get("box_size") or BOX_SIZES.get(dataset, 20))
    return Predictor(json.loads(meta["classes"]), dataset, box, threshold, run, os.fspath(path))


def checkpoint_predictor(
    path: str | Path,
    data_cfg: DictConfig | None,
    *,
    box_size: int | None = None,
    threshold: float = 0.2,
    threads: int | None = None,
) -> Predictor:
    """A checkpoint's network run by torch, normalized with the mean and std it trained on.

    The data set (class names, box size) is ``data_cfg``'s, checked against the checkpoint's,
    or without one the data set the checkpoint records.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    from mnist_lit.checkpoints import (
        build_model,
        check_dataset,
        read_checkpoint,
        spec_of_config,
        trained_normalization,
        trained_on,
        use_trained_normalization,
    )
    from mnist_lit.data.download import datasets

    checkpoint = read_checkpoint(path)
    if data_cfg is not None:
        spec = spec_of_config(data_cfg)
        if spec is None:
            raise UserError(
                f"data._target_={data_cfg._target_} has no DatasetSpec (a `spec` class "
                "attribute): predicting needs its class names"
            )
        check_dataset(checkpoint, spec.name, path)
        use_trained_normalization(checkpoint, data_cfg, path)
        mean, std = float(data_cfg.mean), float(data_cfg.std)
    else:
        spec = datasets()[trained_on(checkpoint) or "mnist"]
        trained = trained_normalization(checkpoint, path)
        if trained is None:
            raise UserError(
                f"checkpoint {path} does not record the mean and std it was trained with: "
                "pass data=<its data set> (conf/data/) to use the config's"
            )
        mean, std = trained["mean"], trained["std"]
    model = build_model(checkpoint, path)
    classes = model.hparams["num_classes"]
    if classes != len(spec.classes):
        raise UserError(
            f"checkpoint {path} has {classes} classes, but data={spec.name} has {len(spec.classes)}"
        )
    net = model.net.eval()

    def run(pixels: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net((torch.from_numpy(pixels) - mean) / std).numpy()

    box = box_size or spec.box_size
    return Predictor(list(spec.classes), spec.name, box, threshold, run, os.fspath(path))


def top_classes(probabilities: np.ndarray | Sequence[float], k: int = 3) -> list[tuple[int, float]]:
    """The ``k`` most probable ``(label, probability)``, most probable first."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[:k]
    return [(int(label), float(probabilities[label])) for label in order]


def describe(predictor: Predictor) -> dict[str, Any]:
    """What a user sees of a loaded model (the server's ``/health``, logs)."""
    return {
        "source": predictor.source,
        "dataset": predictor.dataset,
        "classes": predictor.classes,
        "box_size": predictor.box_size,
    }
