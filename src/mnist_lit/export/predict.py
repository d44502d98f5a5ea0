"""``python predict.py ckpt_path=<file.ckpt | file.onnx> images=<files or folder>``: classify
image files.

Each image is prepared the way MNIST's digits were (``preprocess.py``: grayscale, light on
dark, cropped, scaled into a 20x20 box (28x28 for Fashion-MNIST), centred by mass in 28x28),
then classified by the checkpoint, or by an exported ONNX file with onnxruntime and numpy alone
(torch is never imported: ``predictors.py``). A table goes to stdout, optionally a CSV or JSON
file too; a file that cannot be read is one ``error: <file>: <problem>`` line on stderr and the
others are still classified. Exit code: 0 all classified, 1 some file failed, 2 a bad command
line or checkpoint (``errors.py``).
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, ListConfig

from mnist_lit.errors import FAILED, UserError, atomic_write_bytes, first_line
from mnist_lit.export.predictors import Predictor, load_predictor, top_classes
from mnist_lit.export.preprocess import IMAGE_SUFFIXES, find_images, read_file


@dataclass
class Prediction:
    """One file's result: its top classes with probabilities, or why it failed."""

    file: str
    top: list[tuple[int, float]]  # (label, probability), most probable first
    error: str | None = None


# ----------------------------------------------------------------------------- which files


def image_paths(images: str | Sequence[str]) -> tuple[list[Path], list[Prediction]]:
    """The files to classify (a folder gives its image files, sorted) and the bad entries."""
    entries = [images] if isinstance(images, str) else list(images)
    paths: list[Path] = []
    failed: list[Prediction] = []
    for entry in entries:
        path = Path(str(entry))
        if path.is_dir():
            found = find_images(path)
            if not found:
                no_images = f"a folder with no {', '.join(IMAGE_SUFFIXES)} file"
                failed.append(Prediction(str(path), [], no_images))
            paths += found
        elif path.exists():
            paths.append(path)
        else:
            failed.append(Prediction(str(path), [], "no such file or folder"))
    return paths, failed


# ----------------------------------------------------------------------------- classifying


def classify(
    predictor: Predictor,
    paths: Sequence[Path],
    *,
    batch_size: int = 256,
    top_k: int = 3,
    on_error: Callable[[Prediction], None] | None = None,
) -> list[Prediction]:
    """Prepare and classify each file, in order; a file that fails gets its ``error`` set."""
    results: list[Prediction] = []
    pending: list[tuple[Prediction, np.ndarray]] = []  # prepared, not yet classified
    for i, path in enumerate(paths):
        result = Prediction(str(path), [])
        results.append(result)
        try:
            pending.append((result, predictor.prepare(read_file(path))))
        except UserError as err:
            result.error = str(err)
        except Exception as err:  # an image no one foresaw: report it, classify the others
            result.error = f"cannot prepare it ({type(err).__name__}: {first_line(err)})"
        if result.error is not None and on_error is not None:
            on_error(result)
        if pending and (len(pending) == batch_size or i == len(paths) - 1):
            probabilities = predictor.probabilities(np.stack([x for _, x in pending]))
            for (prediction, _), row in zip(pending, probabilities, strict=True):
                prediction.top = top_classes(row, top_k)
            pending = []
    return results


def print_table(predictions: Sequence[Prediction], classes: Sequence[str]) -> None:
    """The classified files as a table: file, label, its probability, the top 3."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=None, show_lines=False)
    table.add_column("file", overflow="fold")
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("top 3")
    for p in predictions:
        if p.error is None:
            label, probability = p.top[0]
            top = ", ".join(f"{classes[k]} {v:.1%}" for k, v in p.top)
            table.add_row(p.file, classes[label], f"{probability:.3f}", top)
    # piped into a file or another program: no wrapping at the 80 columns rich assumes there
    Console(width=None if sys.stdout.isatty() else 10_000).print(table)


def records(predictions: Sequence[Prediction], classes: Sequence[str]) -> list[dict[str, Any]]:
    """One plain dict per file, for JSON and CSV."""
    rows: list[dict[str, Any]] = []
    for p in predictions:
        if p.error is not None:
            rows.append({"file": p.file, "error": p.error})
            continue
        top: list[dict[str, Any]] = [
            {"label": k, "class": classes[k], "probability": round(v, 6)} for k, v in p.top
        ]
        rows.append({"file": p.file, **top[0], "top": top})
    return rows


def write_output(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` as CSV or JSON (by suffix), atomically."""
    if path.suffix.lower() == ".json":
        text = json.dumps(rows, indent=2) + "\n"
    else:
        buffer = io.StringIO()
        fields = ["file", "label", "class", "probability", "top", "error"]
        writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            top = " ".join(f"{t['label']}:{t['probability']:.4f}" for t in row.get("top", []))
            writer.writerow({**row, "top": top})
        text = buffer.getvalue()
    atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- the command


def _report(prediction: Prediction) -> None:
    print(f"error: {prediction.file}: {prediction.error}", file=sys.stderr)


def predict(cfg: DictConfig) -> list[Prediction]:
    """Classify ``cfg.images`` with ``cfg.ckpt_path``; a ``UserError`` (exit 1) if some failed."""
    output = Path(cfg.output) if cfg.get("output") else None
    predictor = load_predictor(
        cfg.ckpt_path,
        cfg.data,
        box_size=cfg.preprocess.box_size,
        threshold=cfg.preprocess.threshold,
    )
    images = list(cfg.images) if isinstance(cfg.images, ListConfig) else str(cfg.images)
    paths, failed = image_paths(images)
    for prediction in failed:
        _report(prediction)
    predictions = classify(predictor, paths, batch_size=cfg.batch_size, on_error=_report)
    if any(p.error is None for p in predictions):
        print_table(predictions, predictor.classes)
    if output is not None:
        try:
            write_output(output, records([*failed, *predictions], predictor.classes))
        except OSError as err:
            raise UserError(f"cannot write output={output}: {err.strerror or err}") from None
        print(f"[mnist-lit] wrote {output}")
    errors = len(failed) + sum(p.error is not None for p in predictions)
    if errors:
        raise UserError(
            f"{errors} of {len(failed) + len(predictions)} images could not be classified "
            "(each is named above)",
            exit_code=FAILED,
        )
    return predictions
