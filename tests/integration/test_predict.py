"""predict on real MNIST digits rendered the way a person's files look: large, padded, not
centred, dark on light or light on dark, gray paper, colour, alpha, PNG and JPEG; and the real
command on a folder with broken files. The model is ``mnist_ckpt`` (a small CNN, a few hundred
batches). (The preprocessing steps, the output files and the errors: tests/unit.)
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lit.config import PROJECT_ROOT
from mnist_lit.export.predict import classify
from mnist_lit.export.predictors import load_predictor
from mnist_lit.export.preprocess import mnist_like

from ..conftest import run_cli
from .test_startup import PROBE

N_RENDERED = 30


@pytest.fixture(scope="module")
def mnist_test(mnist_data_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    raw = mnist_data_dir / "MNIST" / "raw"
    images = read_image_file(str(raw / "t10k-images-idx3-ubyte"))
    labels = read_label_file(str(raw / "t10k-labels-idx1-ubyte"))
    return images, labels


def render(digit: np.ndarray, i: int) -> tuple[Image.Image, str]:
    """An MNIST digit as a person's image file might hold it; variant ``i`` picks the look."""
    rng = np.random.default_rng(i)
    scale = [4, 6, 9, 3][i % 4]
    big = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BILINEAR)
    width, height = [(200, 300), (300, 200), (400, 400), (120, 160)][i % 4]
    ink = np.asarray(big, dtype=np.float32) / 255  # 1 = ink
    canvas = np.zeros((height, width), dtype=np.float32)
    top = int(rng.integers(0, max(1, height - ink.shape[0])))
    left = int(rng.integers(0, max(1, width - ink.shape[1])))
    canvas[top : top + ink.shape[0], left : left + ink.shape[1]] = ink[:height, :width]
    paper, pen = (0.9, 0.1) if i % 2 == 0 else (0.05, 0.95)  # dark on light, or light on dark
    gray = paper + (pen - paper) * canvas + rng.normal(0, 0.02, canvas.shape)
    pixels = (np.clip(gray, 0, 1) * 255).astype(np.uint8)
    if i % 5 == 0:  # blue ink on paper, RGB
        rgb = np.stack([pixels, pixels, np.maximum(pixels, (canvas * 200).astype(np.uint8))], -1)
        return Image.fromarray(rgb), "png"
    if i % 7 == 3:  # black strokes on a transparent sheet
        alpha = (canvas * 255).astype(np.uint8)
        rgba = np.stack([np.zeros_like(alpha)] * 3 + [alpha], -1)
        return Image.fromarray(rgba), "png"
    return Image.fromarray(pixels), "jpg" if i % 3 == 1 else "png"


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory, mnist_test) -> tuple[Path, list[int]]:
    """N_RENDERED rendered test digits (PNG and JPEG) and three broken files, in one folder."""
    folder = tmp_path_factory.mktemp("images")
    images, labels = mnist_test
    for i in range(N_RENDERED):
        image, fmt = render(images[i].numpy(), i)
        suffix = ".PNG" if i == 4 else f".{fmt}"  # the folder search ignores case
        image.save(folder / f"digit_{i:02d}{suffix}", quality=90)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image, only named like one\n")
    png = (folder / "digit_00.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 3])
    (folder / "readme.txt").write_text("not searched: not a .png/.jpg/.jpeg\n")
    return folder, labels[:N_RENDERED].tolist()


BROKEN = {
    "empty.png": "empty",
    "notes.png": "not an image",
    "truncated.png": "truncated or corrupt",
}


# ----------------------------------------------------------------------------- preprocessing


def test_mnist_digits_come_back_unchanged(mnist_test) -> None:
    """An MNIST image is already prepared: preprocessing must give it back (not just similar)."""
    images, _ = mnist_test
    for image in images[:200].numpy():
        ours = mnist_like(image)
        assert ours.shape == (28, 28)
        assert np.corrcoef(ours.flatten(), image.flatten())[0, 1] > 0.99


# ----------------------------------------------------------------------------- classifying


def test_rendered_digits_are_classified(image_dir, mnist_ckpt: Path) -> None:
    folder, labels = image_dir
    predictor = load_predictor(mnist_ckpt)  # the mean and std it trained with, its classes
    paths = sorted(folder.glob("digit_*"))
    errors = []
    results = classify(predictor, paths, on_error=errors.append)
    assert not errors
    predicted = [r.top[0][0] for r in results]
    correct = sum(p == t for p, t in zip(predicted, labels, strict=True))
    assert correct >= 0.9 * N_RENDERED, f"{correct}/{N_RENDERED}: {predicted} vs {labels}"
    # the same digits fed as a naive resize (no inversion, no crop) do much worse: the
    # preprocessing is what makes files like these work
    naive = np.stack(
        [
            np.asarray(Image.open(p).convert("L").resize((28, 28)), dtype=np.float32)[None] / 255
            for p in paths
        ]
    )
    naive_correct = int((predictor.probabilities(naive).argmax(1) == np.array(labels)).sum())
    assert naive_correct < correct - 5


# ----------------------------------------------------------------------------- the command


def test_cli_folder_with_broken_files(image_dir, mnist_ckpt: Path, tmp_path: Path) -> None:
    """A folder: every image in the table, one stderr line per broken file and one that counts
    them, the CSV, exit code 1."""
    folder, labels = image_dir
    output = tmp_path / "out" / "predictions.csv"
    result = run_cli(
        "predict.py",
        f"ckpt_path={mnist_ckpt}",
        f"images={folder}",
        f"output={output}",
        f"paths.log_dir={tmp_path / 'logs'}",
        timeout=180,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("error: ") for line in lines) and "Traceback" not in result.stderr
    per_file = [line for line in lines if line.startswith(f"error: {folder}")]
    assert len(per_file) == len(BROKEN) and len(lines) == len(BROKEN) + 1  # and the count
    reported = dict(line.split(": ", 2)[1:] for line in per_file)
    assert set(reported) == {str(folder / name) for name in BROKEN}  # one line each, no more
    for name, problem in BROKEN.items():
        assert problem in reported[str(folder / name)]
    assert f"{len(BROKEN)} of {N_RENDERED + len(BROKEN)}" in lines[-1]
    assert "digit_04.PNG" in result.stdout and "top 3" in result.stdout
    assert "readme.txt" not in result.stdout + result.stderr
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert len(rows) == N_RENDERED + len(BROKEN)
    good = [r for r in rows if not r["error"]]
    assert [Path(r["file"]).name[:8] for r in good] == [f"digit_{i:02d}" for i in range(30)]
    correct = sum(int(r["label"]) == t for r, t in zip(good, labels, strict=True))
    assert correct >= 0.9 * N_RENDERED
    assert not [p for p in output.parent.iterdir() if p.name != output.name]  # no temp file


def test_an_exported_onnx_file_predicts_the_same_without_torch(
    image_dir, mnist_ckpt: Path, tmp_path: Path
) -> None:
    """predict.py on the exported ONNX file: the checkpoint's labels and probabilities, and
    neither torch nor Lightning imported (onnxruntime and numpy alone)."""
    folder, _ = image_dir
    onnx = tmp_path / "model.onnx"
    exported = run_cli("export.py", f"ckpt_path={mnist_ckpt}", f"output={onnx}", "verify=false")
    assert exported.returncode == 0, exported.stderr
    paths = sorted(folder.glob("digit_*"))
    from_ckpt = classify(load_predictor(mnist_ckpt), paths)
    from_onnx = classify(load_predictor(onnx), paths)
    for a, b in zip(from_ckpt, from_onnx, strict=True):
        assert [k for k, _ in a.top] == [k for k, _ in b.top]
        assert np.allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-4)

    output = tmp_path / "onnx.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(PROJECT_ROOT / "predict.py"), f"ckpt_path={onnx}",
         f"images={paths[0]}", f"output={output}", f"paths.log_dir={tmp_path / 'logs'}"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stderr.strip().splitlines()[-1] in ("HEAVY  EXIT 0", "HEAVY  EXIT None"), (
        done.stderr
    )
    assert json.loads(output.read_text())[0]["label"] == from_ckpt[0].top[0][0]
