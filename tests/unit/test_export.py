"""export in-process: TorchScript of the tiny checkpoint, verified on the synthetic test set, and
each way it fails (exit code 1 for a failed or mismatching export, 2 for a file it cannot write
or a command ``check_export`` refuses before any work). (ONNX, the real test set, a process
without this package and the CLI: integration.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import mnist_lit.export.export as export_module
from mnist_lit.checkpoints import load_checkpoint
from mnist_lit.errors import UserError
from mnist_lit.export import check_export, output_of
from mnist_lit.export.export import NormalizedNet, export, metadata

from ..conftest import compose_config
from .conftest import SYNTHETIC, TEST_N, synthetic_overrides

MEAN, STD = 0.1307, 0.3081


@pytest.fixture
def export_cfg(tiny_ckpts: dict, synthetic_data_dir: Path, tmp_path: Path):
    """A factory: ``export_cfg(*overrides)``: the tiny synthetic checkpoint, synthetic data."""

    def make(*overrides: str):
        return compose_config(
            "export",
            [
                f"ckpt_path={tiny_ckpts['synthetic']}",
                *synthetic_overrides(synthetic_data_dir),
                "format=torchscript",
                "batch_size=40",
                "threads=1",
                *overrides,
            ],
            tmp_path / "run",
            synthetic_data_dir,
        )

    return make


def test_normalization_is_baked_in(tiny_ckpts: dict) -> None:
    net = load_checkpoint(tiny_ckpts["full"]).net.eval()
    pixels = torch.rand(3, 1, 28, 28)
    with torch.inference_mode():
        assert torch.equal(NormalizedNet(net, MEAN, STD)(pixels), net((pixels - MEAN) / STD))


def test_metadata_says_what_a_user_needs() -> None:
    meta = metadata(SYNTHETIC, MEAN, STD, "x.ckpt")
    assert meta["dataset"] == "synthetic" and json.loads(meta["classes"])[7] == "7"
    assert float(meta["mean"]) == MEAN and float(meta["std"]) == STD
    assert "[batch, 1, 28, 28]" in meta["input"] and "[batch, 10]" in meta["output"]
    assert all(isinstance(v, str) for v in meta.values())


def test_default_output_is_next_to_the_checkpoint(export_cfg, tmp_path: Path) -> None:
    ckpt = tmp_path / "run" / "checkpoints" / "epoch_005.ckpt"
    for fmt, name in (("onnx", "epoch_005.onnx"), ("torchscript", "epoch_005.pt")):
        assert output_of(export_cfg(f"ckpt_path={ckpt}", f"format={fmt}")) == ckpt.parent / name


def test_an_export_never_overwrites_a_checkpoint(
    export_cfg, tiny_ckpts: dict, tmp_path: Path
) -> None:
    """output= onto another checkpoint (or any file torch.save wrote) is refused before any
    work, as is a name without the format's suffix; an earlier export is replaced."""
    other = tmp_path / "other.ckpt"
    shutil.copy(tiny_ckpts["full"], other)
    saved_as_pt = tmp_path / "weights.pt"
    shutil.copy(tiny_ckpts["full"], saved_as_pt)
    for output, expected in ((other, "other.pt"), (saved_as_pt, "weights-exported.pt")):
        with pytest.raises(UserError) as caught:
            check_export(export_cfg(f"output={output}"))
        assert caught.value.exit_code == 2 and expected in str(caught.value)
    assert other.read_bytes() == tiny_ckpts["full"].read_bytes()
    exported = tmp_path / "model.pt"
    export(export_cfg(f"output={exported}"))
    check_export(export_cfg(f"output={exported}"))  # an export again: allowed


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")  # the format's reader
def test_torchscript_export_matches_pytorch(export_cfg, tmp_path: Path, capsys) -> None:
    output = tmp_path / "model.pt"
    results = export(export_cfg(f"output={output}"))
    assert results["output"] == str(output) and results["images"] == TEST_N
    assert results["differing_predictions"] == 0 and results["max_abs_logit_diff"] < 1e-5
    assert results["accuracy_exported"] == results["accuracy_pytorch"]
    assert results["images_per_s_exported"] > 0 and results["images_per_s_pytorch"] > 0
    out = capsys.readouterr().out
    assert str(output) in out and "differing predictions = 0" in out
    extra = {"metadata.json": ""}
    loaded = torch.jit.load(str(output), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["dataset"] == "synthetic"
    assert loaded(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_without_verify_only_the_file(export_cfg, tiny_ckpts: dict) -> None:
    results = export(export_cfg("verify=false"))
    written = tiny_ckpts["synthetic"].with_suffix(".pt")
    assert results == {"output": str(written)} and written.is_file()
    written.unlink()


def test_an_export_that_does_not_match_is_exit_code_1(
    export_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_verify = export_module.verify

    def off_by_one(*args, **kwargs):
        return {**real_verify(*args, **kwargs), "differing_predictions": 1}

    monkeypatch.setattr(export_module, "verify", off_by_one)
    output = tmp_path / "model.pt"
    with pytest.raises(UserError) as caught:
        export(export_cfg(f"output={output}"))
    assert caught.value.exit_code == 1 and str(output) in str(caught.value)


def test_an_exporter_that_fails_is_exit_code_1(
    export_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::foo\nmore detail")

    monkeypatch.setattr(export_module, "export_torchscript", broken)
    with pytest.raises(UserError) as caught:
        export(export_cfg(f"output={tmp_path / 'model.pt'}"))
    assert caught.value.exit_code == 1
    assert "torchscript" in str(caught.value) and "aten::foo" in str(caught.value)


def test_an_output_that_cannot_be_written_is_exit_code_2(export_cfg, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError) as caught:
        export(export_cfg(f"output={blocker}/model.pt"))
    assert caught.value.exit_code == 2 and str(blocker) in str(caught.value)


def test_a_checkpoint_of_another_data_set_is_refused(export_cfg, tiny_ckpts: dict) -> None:
    with pytest.raises(UserError) as caught:
        export(export_cfg(f"ckpt_path={tiny_ckpts['full']}"))
    assert caught.value.exit_code == 2 and "data=mnist" in str(caught.value)


@pytest.mark.parametrize("how", ["torchscript next to a .pt", "output= the checkpoint", "a link"])
def test_an_export_never_overwrites_its_checkpoint(
    how: str, export_cfg, tiny_ckpts: dict, tmp_path: Path
) -> None:
    original = tiny_ckpts["synthetic"].read_bytes()
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(original)
    overrides = {
        "torchscript next to a .pt": [],
        "output= the checkpoint": ["format=onnx", f"output={ckpt}"],
        "a link": ["format=onnx", f"output={tmp_path / 'link.onnx'}"],
    }[how]
    (tmp_path / "link.onnx").symlink_to(ckpt)
    cfg = export_cfg(f"ckpt_path={ckpt}", *overrides)
    for refusing in (output_of, check_export, export):
        with pytest.raises(UserError) as caught:
            refusing(cfg)
        assert caught.value.exit_code == 2 and "itself" in str(caught.value)
    assert ckpt.read_bytes() == original


# ----------------------------------------------------------------------------- before any work


def test_a_usable_command_passes_the_checks(export_cfg) -> None:
    check_export(export_cfg())


@pytest.mark.parametrize(
    "override, expected",
    [
        ("format=tflite", "format='tflite' is invalid"),
        ("atol=0", "atol=0"),
        ("threads=0", "threads=0"),
        ("batch_size=0", "batch_size=0"),
    ],
)
def test_bad_values_are_refused_before_any_work(export_cfg, override: str, expected: str) -> None:
    with pytest.raises(UserError) as caught:
        check_export(export_cfg(override))
    assert caught.value.exit_code == 2 and expected in str(caught.value)


def test_a_checkpoint_it_cannot_use_is_refused_before_any_work(
    export_cfg, tiny_ckpts: dict, tmp_path: Path
) -> None:
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"an exported file is no checkpoint to export")
    refusals = {
        f"ckpt_path={tmp_path / 'missing.ckpt'}": "missing.ckpt does not exist",
        f"ckpt_path={tiny_ckpts['run']}": "is a folder, not a file",
        f"ckpt_path={onnx}": "is not a LitClassifier checkpoint",
        f"ckpt_path={tiny_ckpts['full']}": "data=mnist",  # trained on another data set
    }
    for override, expected in refusals.items():
        with pytest.raises(UserError) as caught:
            check_export(export_cfg(override))
        assert caught.value.exit_code == 2 and expected in str(caught.value), override
    assert not onnx.with_suffix(".pt").exists()
