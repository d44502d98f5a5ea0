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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mnist_lit.errors import UserError, first_line
from mnist_lit.export import ONNX_SUFFIX
from mnist_lit.export.preprocess import prepare

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: the preprocessing box of each data set (``DatasetSpec.box_size``), for ONNX files that do
#: not carry it: the spec lives beside the data modules, which need torch
BOX_SIZES = {"mnist": 20, "fashion_mnist": 28}
#: what an ONNX model takes per image (``export.py``): ``[batch, *INPUT_SHAPE]``
INPUT_SHAPE = (1, 28, 28)
#: the most class names an ONNX file may have (this project's data sets have 10; ImageNet 1,000)
MAX_CLASSES = 1000


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
    classes, dataset, meta_box = onnx_metadata(session.get_modelmeta().custom_metadata_map, path)
    input_name = checked_input(session, path)

    def run(pixels: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {input_name: pixels})[0])

    check_output(run, len(classes), path)
    box = box_size or meta_box or BOX_SIZES.get(dataset, 20)
    return Predictor(classes, dataset, box, threshold, run, os.fspath(path))


# ----------------------------------------------------------------------------- ONNX files
# An .onnx file may come from anywhere: what predict.py and the server read of it is checked
# when it loads, so a file export.py did not write is one line, not a traceback on every image
# (a wrong shape), an answer per request that fails (bad class names) or a huge box per image
# (box_size=12000 scales every image to 12000x12000 float32 pixels).


def _refused(path: str | Path, problem: str) -> UserError:
    return UserError(
        f"ONNX file {path}: {problem}: pass a file that export.py wrote "
        "(python export.py ckpt_path=<checkpoint> format=onnx)"
    )


def _shown(value: object, limit: int = 40) -> str:
    """``value`` as it may be quoted in one line: its first ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def onnx_metadata(meta: Mapping[str, str], path: str | Path) -> tuple[list[str], str, int | None]:
    """The class names, data set and box size (``None``: not given) an ONNX file's metadata
    gives, each checked: a ``UserError`` naming the bad key."""
    if not meta.get("classes") or not meta.get("dataset"):
        raise UserError(f"{path} has no class names in its metadata: export it with export.py")
    try:
        classes = json.loads(meta["classes"])
    except (ValueError, RecursionError):  # RecursionError: JSON nested thousands deep
        shown = _shown(meta["classes"])
        raise _refused(path, f"its metadata classes={shown} is not JSON") from None
    if (
        not isinstance(classes, list)
        or not 2 <= len(classes) <= MAX_CLASSES
        or not all(isinstance(name, str) for name in classes)
    ):
        raise _refused(
            path,
            f"its metadata classes={_shown(meta['classes'])} is not a JSON list of 2 to "
            f"{MAX_CLASSES:,} class names",
        )
    box = meta.get("box_size")
    if box is None:
        return classes, meta["dataset"], None
    # the range predict.py's preprocess.box_size takes: the box must fit in the 28x28 input
    if not (box.isascii() and box.isdigit() and 1 <= int(box) <= 28):
        raise _refused(
            path, f"its metadata box_size={_shown(box)} is not a whole number from 1 to 28"
        )
    return classes, meta["dataset"], int(box)


def checked_input(session: Any, path: str | Path) -> str:
    """The name of the session's one input, checked to be float32 ``[batch, 1, 28, 28]`` with
    any batch size (a named dimension: predict.py sends many images at once)."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise _refused(path, f"it takes {len(inputs)} inputs, not one (pixels)")
    (pixels,) = inputs
    shape = list(pixels.shape or [])
    fixed_ok = len(shape) == 4 and all(
        not isinstance(d, int) or d == want for d, want in zip(shape[1:], INPUT_SHAPE, strict=True)
    )
    if pixels.type != "tensor(float)" or not fixed_ok or isinstance(shape[0], int):
        shown = ", ".join("batch" if d is None else str(d) for d in shape)
        raise _refused(
            path,
            f"its input is {pixels.type} [{shown}], not tensor(float) [batch, 1, 28, 28] with "
            "any batch size",
        )
    return str(pixels.name)


def check_output(run: Callable[[np.ndarray], np.ndarray], classes: int, path: str | Path) -> None:
    """Run the model on two blank images: it must answer one float logit per class each.

    Run rather than read from the file: a declared output shape may be named dimensions, or
    not what the graph computes.
    """
    try:
        logits = run(np.zeros((2, *INPUT_SHAPE), dtype=np.float32))
    except Exception as err:  # onnxruntime raises its own exception types
        raise _refused(
            path, f"it fails on two blank images ({type(err).__name__}: {first_line(err)})"
        ) from None
    if logits.shape != (2, classes) or not np.issubdtype(logits.dtype, np.floating):
        raise _refused(
            path,
            f"its output for 2 images is {logits.dtype} {list(logits.shape)}, not float "
            f"[2, {classes}] (one logit for each of the {classes} classes in its metadata)",
        )


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
