"""predict: MNIST's preprocessing for any image file, and the command on real rendered digits.

The images are real MNIST test digits (never trained on) rendered the way a person's files
look: large, padded, not centred, dark on light or light on dark, gray paper, colour, alpha,
PNG and JPEG. The model is ``trained_checkpoint`` (a small CNN, a few hundred batches).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lit.checkpoints import load_checkpoint
from mnist_lit.config import ConfigError
from mnist_lit.data.preprocess import (
    ImageError,
    center_of_mass,
    decode,
    mnist_like,
    normalize,
    preprocess,
)
from mnist_lit.predict import classify, predict

from .conftest import DATA_DIR, compose_config, run_cli
from .test_checkpoints import trained_checkpoint

MEAN, STD = 0.1307, 0.3081


@pytest.fixture(scope="session")
def mnist_ckpt(tmp_path_factory: pytest.TempPathFactory, mnist_data_dir: Path) -> Path:
    """The small CNN checkpoint that test_checkpoints trains once per session."""
    return trained_checkpoint(tmp_path_factory.getbasetemp())


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
    "empty.png": "the file is empty",
    "notes.png": "not an image (PNG or JPEG expected)",
    "truncated.png": "the image is truncated or corrupt",
}


# ----------------------------------------------------------------------------- preprocessing


def test_mnist_digits_come_back_unchanged(mnist_test) -> None:
    """An MNIST image is already prepared: preprocessing must give it back (not just similar)."""
    images, _ = mnist_test
    for image in images[:200]:
        ours = preprocess(image, MEAN, STD)
        original = normalize(image.float() / 255, MEAN, STD)[None]
        assert ours.shape == (1, 28, 28)
        correlation = torch.corrcoef(torch.stack([ours.flatten(), original.flatten()]))[0, 1]
        assert correlation > 0.99


def test_dark_on_light_bar_is_inverted_boxed_and_centred() -> None:
    """A dark 40x10 bar on a light 100x100 page: light on black, 20x5 after scaling, centred."""
    page = torch.full((100, 100), 230, dtype=torch.uint8)
    page[10:50, 70:80] = 20
    out = mnist_like(page)
    assert out.shape == (28, 28)
    assert out.min() == 0 and out.max() == pytest.approx(1.0, abs=0.02)
    rows, cols = torch.nonzero(out > 0.5, as_tuple=True)
    assert rows.max() - rows.min() + 1 == 20 and cols.max() - cols.min() + 1 == 5
    row, col = center_of_mass(out)
    assert abs(row - 14) <= 0.5 and abs(col - 14) <= 0.5
    assert torch.equal(out, mnist_like(255 - page))  # polarity does not matter


def test_transparent_background_is_not_taken_for_ink(mnist_test) -> None:
    images, _ = mnist_test
    digit = images[0]
    rgba = torch.zeros(4, 28, 28, dtype=torch.uint8)  # black everywhere, the digit in alpha
    rgba[3] = digit
    correlation = torch.corrcoef(
        torch.stack([mnist_like(rgba).flatten(), digit.float().flatten()])
    )[0, 1]
    assert correlation > 0.99


def test_blank_and_broken_images_say_why() -> None:
    with pytest.raises(ImageError, match="no digit found"):
        mnist_like(torch.full((50, 40), 200, dtype=torch.uint8))
    with pytest.raises(ImageError, match="the file is empty"):
        decode(b"")
    with pytest.raises(ImageError, match=r"not an image \(PNG or JPEG expected\)"):
        decode(b"GIF? no: plain text")


# ----------------------------------------------------------------------------- classifying


def test_rendered_digits_are_classified(image_dir, mnist_ckpt: Path) -> None:
    folder, labels = image_dir
    model = load_checkpoint(mnist_ckpt, dataset="mnist")
    paths = sorted(folder.glob("digit_*"))
    errors = []
    results = classify(model, paths, MEAN, STD, on_error=errors.append)
    assert not errors
    predicted = [r.top[0][0] for r in results]
    correct = sum(p == t for p, t in zip(predicted, labels, strict=True))
    assert correct >= 0.9 * N_RENDERED, f"{correct}/{N_RENDERED}: {predicted} vs {labels}"
    # the same digits fed as a naive resize (no inversion, no crop) do much worse: the
    # preprocessing is what makes files like these work
    naive = torch.stack(
        [
            normalize(
                torch.from_numpy(
                    np.asarray(Image.open(p).convert("L").resize((28, 28)), dtype=np.float32)
                )
                / 255,
                MEAN,
                STD,
            )[None]
            for p in paths
        ]
    )
    naive_correct = (model(naive).argmax(1) == torch.tensor(labels)).sum().item()
    assert naive_correct < correct - 5


def test_broken_files_are_reported_and_the_rest_classified(image_dir, mnist_ckpt: Path) -> None:
    folder, _ = image_dir
    model = load_checkpoint(mnist_ckpt, dataset="mnist")
    paths = [folder / "digit_01.jpg", *(folder / name for name in BROKEN), folder / "digit_02.png"]
    reported = []
    results = classify(model, paths, MEAN, STD, on_error=reported.append)
    assert [r.file for r in results] == [str(p) for p in paths]  # input order kept
    assert [r.error is None for r in results] == [True, False, False, False, True]
    for result in reported:
        assert BROKEN[Path(result.file).name] in result.error and "\n" not in result.error
    assert all(len(r.top) == 3 and r.top[0][1] >= r.top[1][1] for r in results if not r.error)


# ----------------------------------------------------------------------------- the command


def test_cli_folder_with_broken_files(image_dir, mnist_ckpt: Path, tmp_path: Path) -> None:
    """A folder: every image in the table, one stderr line per broken file, CSV, exit code 1."""
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
    reported = dict(line.split(": ", 2)[1:] for line in result.stderr.strip().splitlines())
    assert set(reported) == {str(folder / name) for name in BROKEN}  # one line each, no more
    for name, problem in BROKEN.items():
        assert reported[str(folder / name)].startswith(problem)
    assert "digit_04.PNG" in result.stdout and "top 3" in result.stdout
    assert "readme.txt" not in result.stdout + result.stderr
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert len(rows) == N_RENDERED + len(BROKEN)
    good = [r for r in rows if not r["error"]]
    assert [Path(r["file"]).name[:8] for r in good] == [f"digit_{i:02d}" for i in range(30)]
    correct = sum(int(r["label"]) == t for r, t in zip(good, labels, strict=True))
    assert correct >= 0.9 * N_RENDERED
    assert not [p for p in output.parent.iterdir() if p.name != output.name]  # no temp file


def test_json_output_and_exit_code_0(image_dir, mnist_ckpt: Path, tmp_path: Path, capsys) -> None:
    folder, _ = image_dir
    output = tmp_path / "predictions.json"
    cfg = compose_config(
        "predict",
        [
            f"ckpt_path={mnist_ckpt}",
            f"images=[{folder / 'digit_03.png'},{folder / 'digit_01.jpg'}]",
            f"output={output}",
        ],
        tmp_path,
        DATA_DIR,
    )
    assert predict(cfg) == 0
    rows = json.loads(output.read_text())
    assert [Path(r["file"]).name for r in rows] == ["digit_03.png", "digit_01.jpg"]
    for row in rows:
        assert set(row) == {"file", "label", "class", "probability", "top"}
        assert row["class"] == str(row["label"]) and 0 < row["probability"] <= 1
        assert [t["probability"] for t in row["top"]] == sorted(
            (t["probability"] for t in row["top"]), reverse=True
        )
    assert "digit_03.png" in capsys.readouterr().out


def test_bad_output_suffix_and_missing_files(mnist_ckpt: Path, tmp_path: Path, capsys) -> None:
    base = [f"ckpt_path={mnist_ckpt}", f"images={tmp_path / 'nothing-here.png'}"]
    cfg = compose_config("predict", [*base, f"output={tmp_path / 'out.txt'}"], tmp_path, DATA_DIR)
    with pytest.raises(ConfigError, match=r"must end in \.csv or \.json"):
        predict(cfg)
    cfg = compose_config("predict", base, tmp_path, DATA_DIR)
    assert predict(cfg) == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'nothing-here.png'}: no such file or folder"
