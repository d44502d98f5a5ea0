"""The export extra (``pip install -e '.[export]'``): a checkpoint as ONNX or TorchScript
(``export.py``), predictions for image files (``predict.py``), and the predictors both use and
the server serves (``predictors.py``, ``preprocess.py``). docs/predict-export.md.

Below: the types and ranges of ``conf/predict.yaml`` and ``conf/export.yaml``'s own keys, and
what each command refuses before its work (``check_predict``, ``check_export``). Nothing here
imports torch: a missing file is answered before it loads.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from mnist_lit.config import check
from mnist_lit.errors import UserError, checkpoint_file, require_extra
from mnist_lit.schema import Count, Node, Options, Positive

if TYPE_CHECKING:
    from omegaconf import DictConfig

#: export's formats and the suffix of the file each writes
EXPORT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
#: the file an exported ONNX model is in (onnxruntime runs it, without torch)
ONNX_SUFFIX = EXPORT_SUFFIXES["onnx"]


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


def check_predict(cfg: DictConfig) -> None:
    """What ``predict.py`` refuses before it reads an image: a config value, or a model it
    cannot use (``checked_model``)."""
    check(cfg, PredictOptions, required=("data", "paths"))
    checked_model(cfg.ckpt_path, cfg.data)


def check_export(cfg: DictConfig) -> None:
    """What ``export.py`` refuses before it exports: a config value, a missing extra, an output
    onto the checkpoint it reads, a checkpoint it cannot use."""
    check(cfg, ExportOptions, required=("data", "paths"))
    if cfg.format == "onnx":  # TorchScript needs torch alone
        require_extra("export", "onnx", "onnxscript", "onnxruntime")
    output_of(cfg)
    checked_model(cfg.ckpt_path, cfg.data, onnx=False)


def checked_model(
    ckpt_path: str | Path, data_cfg: DictConfig | None = None, *, onnx: bool = True
) -> Path:
    """``ckpt_path`` as a model file ``load_predictor`` can use, or a one-line ``UserError``.

    A missing file is refused without torch. An ``.onnx`` file (when ``onnx``) needs
    onnxruntime; a checkpoint is read (torch) and must load, build its network and, with
    ``data_cfg``, be of that config's data set.
    """
    path = Path(str(ckpt_path))
    if onnx and path.suffix.lower() == ONNX_SUFFIX:
        if not path.is_file():
            raise UserError(
                f"ONNX file {path} does not exist: pass ckpt_path=<file.onnx> that export.py wrote"
            )
        require_extra("export", "onnxruntime")
        return path
    checkpoint_file(path)  # a missing file or a folder, refused before torch loads
    from mnist_lit.checkpoints import checkpoint_problem, dataset_of_config

    dataset = dataset_of_config(data_cfg) if data_cfg is not None else None
    problem = checkpoint_problem(path, dataset=dataset)
    if problem is not None:
        raise UserError(problem)
    return path


def output_beside(source: str | Path, output: str | None, suffix: str) -> Path:
    """``output``, or ``source`` with ``suffix``: never ``source`` itself (a ``UserError``)."""
    source = Path(source)
    path = Path(output) if output else source.with_suffix(suffix)
    if path.resolve() == source.resolve() or (path.exists() and path.samefile(source)):
        other = source.with_name(f"{source.stem}-exported{suffix}")
        raise UserError(f"output={path} is the input {source} itself: pass output={other}")
    return path


def output_of(cfg: DictConfig) -> Path:
    """Where the export goes: ``output``, or next to the checkpoint (``epoch_005.ckpt`` ->
    ``epoch_005.onnx``). Never onto the checkpoint it reads, a file without the format's suffix
    or another checkpoint (a ``UserError`` for each): an export replaces only an export."""
    suffix = EXPORT_SUFFIXES[cfg.format]
    path = output_beside(cfg.ckpt_path, cfg.output, suffix)
    if path.suffix.lower() != suffix:
        raise UserError(
            f"output={path}: format={cfg.format} writes a {suffix} file: "
            f"pass output={path.with_suffix(suffix)}"
        )
    if path.is_file() and is_torch_save_file(path):
        raise UserError(
            f"output={path} is a saved PyTorch file (a checkpoint?), which the export would "
            f"overwrite: pass output={path.with_name(f'{path.stem}-exported{suffix}')}"
        )
    return path


def is_torch_save_file(path: Path) -> bool:
    """Whether ``path`` was written by ``torch.save`` (a zip with a ``data.pkl``); TorchScript
    files, which export.py writes, hold their ``code/`` besides."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/data.pkl") for n in names) and not any("/code/" in n for n in names)
