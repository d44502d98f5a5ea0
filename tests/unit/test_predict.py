"""predict: which files, classifying them in order, the table and the CSV/JSON output, and the
command in-process (a ``UserError`` with exit code 1 when some files failed, 2 for what
``check_predict`` refuses before any image is read). The model is the tiny checkpoint; the
images are drawn here. (Accuracy on real digits, an ONNX file, the CLI: integration.)"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_lit.errors import UserError
from mnist_lit.export import check_predict
from mnist_lit.export.predict import (
    Prediction,
    classify,
    image_paths,
    predict,
    print_table,
    records,
    write_output,
)
from mnist_lit.export.predictors import Predictor, load_predictor

from ..conftest import compose_config
from .conftest import SYNTHETIC_TARGET

BROKEN = {
    "empty.png": "empty",
    "notes.png": "not an image",
    "truncated.png": "truncated or corrupt",
}


def digit(i: int) -> np.ndarray:
    """A light bar at one of a few places on a dark 60x50 page; ``i`` picks which."""
    page = np.zeros((60, 50), dtype=np.uint8)
    top, left = 5 + 8 * (i % 5), 5 + 6 * (i % 6)
    page[top : top + 20, left : left + 6] = 240
    return page


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six images (PNG and JPEG, one with an upper-case suffix), three broken files, a text."""
    folder = tmp_path_factory.mktemp("images")
    for i in range(6):
        suffix = [".png", ".jpg", ".PNG"][i % 3]
        Image.fromarray(digit(i)).save(folder / f"digit_{i}{suffix}", quality=95)
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.png").write_text("not an image, only named like one\n")
    png = (folder / "digit_0.png").read_bytes()
    (folder / "truncated.png").write_bytes(png[: len(png) // 3])
    (folder / "readme.txt").write_text("not searched: not a .png/.jpg/.jpeg\n")
    return folder


@pytest.fixture(scope="module")
def model(tiny_ckpts: dict, tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    data = compose_config("predict", [], tmp_path_factory.mktemp("run")).data
    return load_predictor(tiny_ckpts["full"], data)


def predict_cfg(tiny_ckpts: dict, tmp_path: Path, *overrides: str):
    return compose_config(
        "predict", [f"ckpt_path={tiny_ckpts['full']}", *overrides], tmp_path / "run"
    )


# ----------------------------------------------------------------------------- which files


def test_a_folder_gives_its_images_sorted_and_bad_entries_are_named(
    image_dir: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    paths, failed = image_paths([str(image_dir), str(tmp_path / "nope.png"), str(empty)])
    names = [p.name for p in paths]
    assert names == sorted(names) and "readme.txt" not in names and "digit_2.PNG" in names
    assert [(f.file, f.error is not None) for f in failed] == [
        (str(tmp_path / "nope.png"), True),
        (str(empty), True),
    ]
    assert image_paths(str(image_dir / "digit_1.jpg")) == ([image_dir / "digit_1.jpg"], [])


# ----------------------------------------------------------------------------- classifying


def test_broken_files_are_reported_and_the_rest_classified(image_dir: Path, model) -> None:
    paths = [image_dir / "digit_1.jpg", *(image_dir / name for name in BROKEN)]
    paths.append(image_dir / "digit_0.png")
    reported: list[Prediction] = []
    results = classify(model, paths, batch_size=2, on_error=reported.append)
    assert [r.file for r in results] == [str(p) for p in paths]  # input order kept
    assert [r.error is None for r in results] == [True, False, False, False, True]
    assert [r.file for r in reported] == [str(image_dir / name) for name in BROKEN]
    for result in reported:
        assert BROKEN[Path(result.file).name] in result.error and "\n" not in result.error
    for result in (r for r in results if r.error is None):
        assert len(result.top) == 3
        assert [p for _, p in result.top] == sorted((p for _, p in result.top), reverse=True)
        assert 0 < sum(p for _, p in result.top) <= 1.0 + 1e-6


def test_batches_do_not_change_the_results(image_dir: Path, model) -> None:
    paths = sorted(image_dir.glob("digit_*"))
    one = classify(model, paths, batch_size=1)
    all_at_once = classify(model, paths, batch_size=256)
    for a, b in zip(one, all_at_once, strict=True):
        assert [k for k, _ in a.top] == [k for k, _ in b.top]
        assert np.allclose([p for _, p in a.top], [p for _, p in b.top], atol=1e-5)


def test_an_unforeseen_failure_is_reported_for_that_file(
    image_dir: Path, model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(model, "prepare", lambda data: 1 / 0)
    (result,) = classify(model, [image_dir / "digit_0.png"])
    assert "ZeroDivisionError" in result.error


# ----------------------------------------------------------------------------- output


def _predictions() -> list[Prediction]:
    return [
        Prediction("a.png", [(7, 0.9), (1, 0.05), (2, 0.01)]),
        Prediction("b.png", [], "not an image (PNG, JPEG, WebP, GIF or BMP expected)"),
    ]


def test_records_and_both_output_formats(tmp_path: Path) -> None:
    classes = [str(d) for d in range(10)]
    rows = records(_predictions(), classes)
    assert rows[0]["label"] == 7 and rows[0]["class"] == "7" and rows[0]["probability"] == 0.9
    error = "not an image (PNG, JPEG, WebP, GIF or BMP expected)"
    assert rows[1] == {"file": "b.png", "error": error}

    write_output(tmp_path / "out.JSON", rows)
    assert json.loads((tmp_path / "out.JSON").read_text()) == rows
    write_output(tmp_path / "out.csv", rows)
    table = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert table[0]["top"] == "7:0.9000 1:0.0500 2:0.0100" and table[0]["error"] == ""
    assert table[1]["error"].startswith("not an image") and table[1]["label"] == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.JSON", "out.csv"]  # no temp file


def test_the_table_names_the_classes(capsys) -> None:
    print_table(_predictions(), [f"class-{d}" for d in range(10)])
    out = capsys.readouterr().out
    assert "a.png" in out and "class-7" in out and "b.png" not in out


# ----------------------------------------------------------------------------- the command


def test_all_classified_returns_them_and_writes_json(
    image_dir: Path, tiny_ckpts: dict, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "predictions.json"
    images = f"images=[{image_dir / 'digit_3.png'},{image_dir / 'digit_1.jpg'}]"
    cfg = predict_cfg(tiny_ckpts, tmp_path, images, f"output={output}")
    predictions = predict(cfg)
    assert [Path(p.file).name for p in predictions] == ["digit_3.png", "digit_1.jpg"]
    rows = json.loads(output.read_text())
    assert [Path(r["file"]).name for r in rows] == ["digit_3.png", "digit_1.jpg"]
    for row in rows:
        assert set(row) == {"file", "label", "class", "probability", "top"}
    out = capsys.readouterr().out
    assert "digit_3.png" in out and str(output) in out


def test_some_files_failing_is_exit_code_1_after_the_rest(
    image_dir: Path, tiny_ckpts: dict, tmp_path: Path, capsys
) -> None:
    output = tmp_path / "out.csv"
    missing = tmp_path / "nothing-here.png"
    cfg = predict_cfg(tiny_ckpts, tmp_path, f"images=[{image_dir},{missing}]", f"output={output}")
    with pytest.raises(UserError) as caught:
        predict(cfg)
    assert caught.value.exit_code == 1
    assert "4 of 10" in str(caught.value)  # 3 broken files and the missing one
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert any(str(missing) in line for line in err)
    assert len(output.read_text().splitlines()) == 1 + 10  # every file, failed ones too


def test_an_output_that_cannot_be_written(image_dir: Path, tiny_ckpts: dict, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = predict_cfg(
        tiny_ckpts, tmp_path, f"images={image_dir / 'digit_0.png'}", f"output={blocker}/x.csv"
    )
    with pytest.raises(UserError) as caught:
        predict(cfg)
    assert caught.value.exit_code == 2 and "output=" in str(caught.value)


def test_the_data_config_names_the_classes_and_box(
    image_dir: Path, tiny_ckpts: dict, tmp_path: Path, capsys
) -> None:
    """A data module with a spec: its classes and box size; one without: refused."""
    cfg = compose_config(
        "predict",
        [
            f"ckpt_path={tiny_ckpts['synthetic']}",
            f"images={image_dir / 'digit_0.png'}",
            f"data._target_={SYNTHETIC_TARGET}",
        ],
        tmp_path / "run",
    )
    assert len(predict(cfg)) == 1
    cfg = compose_config(
        "predict",
        [
            f"ckpt_path={tiny_ckpts['full']}",
            "images=x",
            "data._target_=lightning.pytorch.LightningDataModule",
        ],
        tmp_path / "run",
    )
    with pytest.raises(UserError) as caught:
        predict(cfg)
    assert caught.value.exit_code == 2 and "data._target_" in str(caught.value)


# ----------------------------------------------------------------------------- before any work


def test_a_usable_command_passes_the_checks(tiny_ckpts: dict, tmp_path: Path) -> None:
    check_predict(predict_cfg(tiny_ckpts, tmp_path, "images=x", "output=out.CSV"))


@pytest.mark.parametrize(
    "override, key",
    [
        ("output=out.txt", "output"),
        ("batch_size=0", "batch_size"),
        ("preprocess.box_size=29", "preprocess.box_size"),
        ("preprocess.threshold=1", "preprocess.threshold"),
        ("+preprocess.size=20", "preprocess.size"),
    ],
)
def test_bad_values_are_refused_before_any_work(
    tiny_ckpts: dict, tmp_path: Path, override: str, key: str
) -> None:
    cfg = predict_cfg(tiny_ckpts, tmp_path, "images=x", override)
    with pytest.raises(UserError) as caught:
        check_predict(cfg)
    assert caught.value.exit_code == 2 and key in str(caught.value)


def test_a_model_it_cannot_use_is_refused_before_any_work(tiny_ckpts: dict, tmp_path: Path) -> None:
    (tmp_path / "bytes.ckpt").write_bytes(b"not a checkpoint")
    refusals = {
        tmp_path / "missing.ckpt": "missing.ckpt does not exist",
        tmp_path / "missing.onnx": "ONNX file",
        tmp_path / "bytes.ckpt": "is not a LitClassifier checkpoint",
        tiny_ckpts["run"]: "is a folder, not a file",
    }
    for path, expected in refusals.items():
        cfg = compose_config("predict", [f"ckpt_path={path}", "images=x"], tmp_path / "run")
        with pytest.raises(UserError) as caught:
            check_predict(cfg)
        assert caught.value.exit_code == 2 and expected in str(caught.value), path


def test_a_checkpoint_of_another_data_set_is_refused(tiny_ckpts: dict, tmp_path: Path) -> None:
    cfg = compose_config(
        "predict", [f"ckpt_path={tiny_ckpts['synthetic']}", "images=x"], tmp_path / "run"
    )
    for refusing in (check_predict, predict):
        with pytest.raises(UserError) as caught:
            refusing(cfg)
        assert caught.value.exit_code == 2 and "data=synthetic" in str(caught.value)
