"""ONNX files are untrusted input: a file ``export.py`` did not write, with another input or
output shape or bad metadata, is one ``UserError`` (exit code 2) naming what is wrong when
``predict.py`` or ``serve.py`` loads it (``predictors.onnx_predictor``, which both use), never a
traceback, a server that answers 500, or a box of 12,000 pixels per image. The files are tiny
models built with ``onnx.helper`` (``tests/conftest.py``'s ``onnx_file``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnist_lit.errors import BAD_INPUT, UserError
from mnist_lit.export.predict import predict
from mnist_lit.export.predictors import load_predictor
from mnist_lit.serving.server import loaded

from ..conftest import ONNX_METADATA, compose_config, onnx_file


def with_meta(**changes: str | None) -> dict[str, str]:
    """``export.py``'s metadata with ``changes`` (``None`` removes a key)."""
    meta = {**ONNX_METADATA, **changes}
    return {k: v for k, v in meta.items() if v is not None}


def refusal(path: Path) -> UserError:
    with pytest.raises(UserError) as caught:
        load_predictor(path)
    assert caught.value.exit_code == BAD_INPUT
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    return caught.value


def test_a_file_as_export_py_writes_it_loads_and_classifies(tmp_path: Path) -> None:
    predictor = load_predictor(onnx_file(tmp_path / "ok.onnx"))
    assert predictor.classes == [str(k) for k in range(10)]
    assert predictor.dataset == "mnist" and predictor.box_size == 20
    assert predictor.probabilities(np.zeros((3, 1, 28, 28), np.float32)).shape == (3, 10)
    # without box_size in its metadata: the data set's own
    old = load_predictor(onnx_file(tmp_path / "old.onnx", metadata=with_meta(box_size=None)))
    assert old.box_size == 20


BAD_SHAPES = {
    # name: (onnx_file keyword arguments, a word the line names)
    "colour 32x32 input": (dict(input_shape=("batch", 3, 32, 32)), "input"),
    "no channel axis": (dict(input_shape=("batch", 28, 28)), "input"),
    "one image at a time": (dict(input_shape=(1, 1, 28, 28)), "input"),
    "5 logits for 10 classes": (dict(outputs=5), "output"),
    "declares 10 logits, gives 5": (dict(outputs=5, output_shape=("batch", 10)), "output"),
    "a logit per pixel": (dict(outputs=784, output_shape=("batch", "n")), "output"),
}


@pytest.mark.parametrize("name", list(BAD_SHAPES))
def test_a_wrong_input_or_output_shape_is_refused_on_loading(tmp_path: Path, name: str) -> None:
    kwargs, word = BAD_SHAPES[name]
    assert word in str(refusal(onnx_file(tmp_path / "bad.onnx", **kwargs)))


BAD_METADATA = {
    # name: (metadata changes, the key the line names)
    "no classes": (dict(classes=None), "class"),
    "no data set": (dict(dataset=None), "class"),
    "classes not JSON": (dict(classes="0,1,2"), "classes"),
    "classes a JSON object": (dict(classes='{"0": "zero"}'), "classes"),
    "classes not strings": (dict(classes=json.dumps(list(range(10)))), "classes"),
    "classes empty": (dict(classes="[]"), "classes"),
    "classes nested 100,000 deep": (dict(classes="[" * 100_000), "classes"),
    "3 classes for 10 logits": (dict(classes='["a", "b", "c"]'), "classes"),
    "box_size 0": (dict(box_size="0"), "box_size"),
    "box_size -5": (dict(box_size="-5"), "box_size"),
    "box_size 12000": (dict(box_size="12000"), "box_size"),
    "box_size abc": (dict(box_size="abc"), "box_size"),
    "box_size 20.5": (dict(box_size="20.5"), "box_size"),
}


@pytest.mark.parametrize("name", list(BAD_METADATA))
def test_bad_metadata_is_refused_on_loading(tmp_path: Path, name: str) -> None:
    changes, key = BAD_METADATA[name]
    path = onnx_file(tmp_path / "bad.onnx", metadata=with_meta(**changes))
    assert key in str(refusal(path))


def test_predict_and_serve_both_refuse_it_with_exit_code_2(tmp_path: Path) -> None:
    path = onnx_file(tmp_path / "bad.onnx", metadata=with_meta(box_size="12000"))
    cfg = compose_config("predict", [f"ckpt_path={path}", "images=x"], tmp_path / "run")
    for load in (lambda: predict(cfg), lambda: loaded(path)):
        with pytest.raises(UserError) as caught:
            load()
        assert caught.value.exit_code == BAD_INPUT and "box_size" in str(caught.value)
