"""``python export.py ckpt_path=<file.ckpt> format=onnx|torchscript``: a model that runs alone.

The exported model is the checkpoint's network with the data set's normalization baked in
front, so it needs neither this package nor the mean and std:

- input ``pixels``: float32 ``[batch, 1, 28, 28]``, pixel / 255 in [0, 1], light on dark and
  centred like MNIST (``preprocess.py``'s ``mnist_like`` gives exactly that); any batch size;
- output ``logits``: float32 ``[batch, 10]`` (softmax for probabilities).

ONNX is written by ``torch.onnx.export`` (torch's default exporter, which needs ``onnxscript``)
with the data set, class names, mean and std in its metadata; TorchScript by ``torch.jit.script``
with the same in ``metadata.json`` (an extra file of the archive). With ``verify=true`` (the
default) the export is run on the whole test set and compared with PyTorch: same predictions,
logits within ``atol``, and images/s of both.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch import Tensor, nn
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lit.checkpoints import load_checkpoint, spec_of_config
from mnist_lit.data.download import DatasetSpec, ensure_dataset
from mnist_lit.errors import FAILED, UserError, atomic_write, first_line
from mnist_lit.export import output_of


class NormalizedNet(nn.Module):
    """``net((pixels - mean) / std)``: the network as it was trained, fed pixel / 255."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.mean = float(mean)
        self.std = float(std)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.net((pixels - self.mean) / self.std)


def metadata(spec: DatasetSpec, mean: float, std: float, ckpt_path: str | Path) -> dict[str, str]:
    """What a user of the exported file needs to know, as strings."""
    return {
        "dataset": spec.name,
        "classes": json.dumps(list(spec.classes)),
        "mean": str(mean),
        "std": str(std),
        # how predict.py and the server prepare an image for it (preprocess.py)
        "box_size": str(spec.box_size),
        "input": "pixels: float32 [batch, 1, 28, 28], pixel/255 in [0, 1], light on dark, "
        "normalization included",
        "output": f"logits: float32 [batch, {len(spec.classes)}]",
        "checkpoint": str(ckpt_path),
    }


# ----------------------------------------------------------------------------- writing


def export_onnx(model: nn.Module, path: Path, meta: dict[str, str]) -> None:
    """ONNX with a dynamic batch dimension, weights inside the one file, metadata attached."""
    example = torch.zeros(2, 1, 28, 28)
    for name in ("onnxscript", "onnx_ir", "torch.onnx"):  # their INFO lines on every export
        logging.getLogger(name).setLevel(logging.WARNING)
    program = torch.onnx.export(
        model,
        (example,),
        None,
        input_names=["pixels"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    if program is None:  # only without a model to export: never for ours
        raise UserError(f"torch.onnx.export wrote no program for {path}")
    program.model.metadata_props.update(meta)
    program.model.doc_string = f"{meta['input']} -> {meta['output']}"
    atomic_write(path, lambda tmp: program.save(tmp, external_data=False))


def export_torchscript(model: nn.Module, path: Path, meta: dict[str, str]) -> None:
    """TorchScript (``torch.jit.load`` runs it), metadata in the archive's ``metadata.json``."""
    extra = {"metadata.json": json.dumps(meta, indent=2)}
    with _jit_without_deprecation_warnings():
        scripted = torch.jit.script(model)
        atomic_write(path, lambda tmp: torch.jit.save(scripted, str(tmp), _extra_files=extra))


@contextlib.contextmanager
def _jit_without_deprecation_warnings() -> Iterator[None]:
    """torch 2.14 deprecates TorchScript for torch.export; it is still what ``torch.jit.load``
    (and C++ libtorch) read, which is the point of this format."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


# ----------------------------------------------------------------------------- verifying


Runner = Callable[[np.ndarray], np.ndarray]


def onnx_runner(path: Path, threads: int) -> Runner:
    """Run the ONNX file with onnxruntime on the CPU, ``threads`` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda batch: session.run(["logits"], {"pixels": batch})[0]


def torch_runner(model: nn.Module) -> Runner:
    """Run a module (eager or TorchScript) in eval mode with no autograd."""
    model.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch)).numpy()

    return run


@dataclass
class Timing:
    images_per_s: float
    seconds: list[float]


def run_all(runner: Runner, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for every image, ``batch_size`` at a time."""
    return np.concatenate(
        [runner(pixels[i : i + batch_size]) for i in range(0, len(pixels), batch_size)]
    )


def time_runner(runner: Runner, pixels: np.ndarray, batch_size: int, repeats: int = 3) -> Timing:
    """Images/s over full passes: one warm-up pass (not counted), the median of ``repeats``."""
    run_all(runner, pixels, batch_size)
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_all(runner, pixels, batch_size)
        seconds.append(time.perf_counter() - started)
    return Timing(len(pixels) / statistics.median(seconds), seconds)


def load_test_set(spec: DatasetSpec, data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The official test images as pixel / 255, ``[N, 1, 28, 28]`` float32, and their labels."""
    raw_dir = ensure_dataset(spec, Path(data_dir) / spec.raw_subdir)
    images = read_image_file(str(raw_dir / "t10k-images-idx3-ubyte"))
    labels = read_label_file(str(raw_dir / "t10k-labels-idx1-ubyte"))
    pixels = images.unsqueeze(1).float().div(255.0).numpy()
    return np.ascontiguousarray(pixels), labels.numpy()


def verify(
    exported: Runner,
    reference: Runner,
    pixels: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
) -> dict[str, Any]:
    """Compare the exported model with PyTorch on ``pixels``: logits, predictions, speed."""
    ours, theirs = run_all(exported, pixels, batch_size), run_all(reference, pixels, batch_size)
    exported_time = time_runner(exported, pixels, batch_size)
    reference_time = time_runner(reference, pixels, batch_size)
    return {
        "images": len(pixels),
        "max_abs_logit_diff": float(np.abs(ours - theirs).max()),
        "differing_predictions": int((ours.argmax(1) != theirs.argmax(1)).sum()),
        "accuracy_exported": float((ours.argmax(1) == labels).mean()),
        "accuracy_pytorch": float((theirs.argmax(1) == labels).mean()),
        "images_per_s_exported": exported_time.images_per_s,
        "images_per_s_pytorch": reference_time.images_per_s,
    }


# ----------------------------------------------------------------------------- the command


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt_path`` as ``cfg.format``, verify it if asked; returns what it measured."""
    threads = cfg.threads or torch.get_num_threads()
    spec = spec_of_config(cfg.data)
    if spec is None:
        raise UserError(
            f"data._target_={cfg.data._target_} has no DatasetSpec (a `spec` class attribute): "
            "export needs its class names"
        )
    lit = load_checkpoint(cfg.ckpt_path, dataset=spec.name, data_cfg=cfg.data)
    model = NormalizedNet(lit.net, cfg.data.mean, cfg.data.std).eval()
    output = output_of(cfg)
    meta = metadata(spec, cfg.data.mean, cfg.data.std, cfg.ckpt_path)
    try:
        if cfg.format == "onnx":
            export_onnx(model, output, meta)
        else:
            export_torchscript(model, output, meta)
    except OSError as err:
        raise UserError(f"cannot write {output}: {err.strerror or err}") from None
    except Exception as err:
        raise UserError(f"{cfg.format} export failed: {first_line(err)}", FAILED) from None
    print(f"[mnist-lit] exported {cfg.format} to {output} ({output.stat().st_size:,} bytes)")
    print(f"  input  {meta['input']}")
    print(f"  output {meta['output']}")
    results: dict[str, Any] = {"output": str(output)}
    if not cfg.verify:
        return results

    torch.set_num_threads(threads)
    if cfg.format == "onnx":
        import onnxruntime

        exported, name = onnx_runner(output, threads), f"onnxruntime {onnxruntime.__version__}"
    else:
        with _jit_without_deprecation_warnings():
            exported, name = torch_runner(torch.jit.load(str(output))), "TorchScript"
    pixels, labels = load_test_set(spec, cfg.data.data_dir)
    results.update(verify(exported, torch_runner(model), pixels, labels, cfg.batch_size))
    print(
        f"[mnist-lit] verify on {results['images']} {spec.title} test images: "
        f"max |logit diff| = {results['max_abs_logit_diff']:.2e}, "
        f"differing predictions = {results['differing_predictions']}, "
        f"accuracy = {results['accuracy_exported']:.4f} ({name}) / "
        f"{results['accuracy_pytorch']:.4f} (PyTorch)"
    )
    print(
        f"[mnist-lit] speed: {name} {results['images_per_s_exported']:,.0f} images/s, "
        f"PyTorch {torch.__version__} {results['images_per_s_pytorch']:,.0f} images/s "
        f"(CPU, {threads} thread{'s' if threads > 1 else ''}, batch {cfg.batch_size}, "
        "median of 3 passes over the test set after 1 warm-up pass, eval mode, no grad)"
    )
    if results["differing_predictions"] or results["max_abs_logit_diff"] > cfg.atol:
        raise UserError(
            f"{output} does not match PyTorch: {results['differing_predictions']} predictions "
            f"differ, max |logit diff| {results['max_abs_logit_diff']:.2e} > atol={cfg.atol}",
            FAILED,
        )
    return results
