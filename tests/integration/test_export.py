"""export: ONNX and TorchScript files of a model trained on real MNIST that run without this
package and match PyTorch on the whole test set; the real command.

(The export's failures, metadata and TorchScript verified in-process: tests/unit/test_export.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mnist_lit.checkpoints import load_checkpoint
from mnist_lit.export.export import NormalizedNet, export

from ..conftest import DATA_DIR, compose_config, run_cli

MEAN, STD = 0.1307, 0.3081


def export_cfg(ckpt: Path, tmp_path: Path, *overrides: str):
    return compose_config(
        "export", [f"ckpt_path={ckpt}", "batch_size=500", *overrides], tmp_path / "run", DATA_DIR
    )


@pytest.fixture(scope="module")
def reference(mnist_ckpt: Path):
    """The checkpoint's network with normalization in front, and a few real-looking inputs."""
    model = NormalizedNet(load_checkpoint(mnist_ckpt).net, MEAN, STD).eval()
    pixels = torch.rand(7, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return model, pixels, model(pixels).numpy()


def test_onnx_export_matches_pytorch_on_the_test_set(
    mnist_ckpt: Path,
    tmp_path: Path,
    reference,
    capsys,
) -> None:
    output = tmp_path / "model.onnx"
    results = export(export_cfg(mnist_ckpt, tmp_path, f"output={output}", "threads=1"))
    assert results["images"] == 10_000
    assert results["differing_predictions"] == 0
    assert results["max_abs_logit_diff"] < 1e-4
    assert results["accuracy_exported"] == results["accuracy_pytorch"] > 0.9
    assert results["images_per_s_exported"] > 0 and results["images_per_s_pytorch"] > 0
    out = capsys.readouterr().out
    assert "differing predictions = 0" in out and "1 thread, batch 500" in out

    # onnxruntime alone: any batch size, normalization inside, metadata for users
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["pixels"]
    assert session.get_inputs()[0].shape[1:] == [1, 28, 28]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # a symbolic batch dimension
    _, pixels, expected = reference
    for batch in (1, 7):
        logits = session.run(["logits"], {"pixels": pixels[:batch].numpy()})[0]
        np.testing.assert_allclose(logits, expected[:batch], atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(output)).metadata_props}
    assert meta["dataset"] == "mnist" and json.loads(meta["classes"])[7] == "7"
    assert float(meta["mean"]) == MEAN and float(meta["std"]) == STD
    assert list(tmp_path.glob("*.tmp")) == [] and list(tmp_path.glob("*.data")) == []


def test_torchscript_runs_in_a_process_without_mnist_lit(
    mnist_ckpt: Path,
    tmp_path: Path,
    reference,
) -> None:
    output = tmp_path / "model.pt"
    results = export(
        export_cfg(mnist_ckpt, tmp_path, "format=torchscript", f"output={output}", "verify=false")
    )
    assert results == {"output": str(output)}
    _, pixels, expected = reference
    torch.save(pixels, tmp_path / "pixels.pt")
    script = textwrap.dedent(
        f"""
        import json, sys, torch
        extra = {{"metadata.json": ""}}
        model = torch.jit.load({str(output)!r}, _extra_files=extra)
        pixels = torch.load({str(tmp_path / "pixels.pt")!r})
        with torch.inference_mode():
            logits = torch.cat([model(pixels[:1]), model(pixels[1:])])
        torch.save(logits, {str(tmp_path / "logits.pt")!r})
        meta = json.loads(extra["metadata.json"])
        print(meta["dataset"], len(json.loads(meta["classes"])))
        print(any(name.startswith("mnist_lit") for name in sys.modules))
        """
    )
    # a clean interpreter in another folder: only torch is imported
    result = subprocess.run(
        [sys.executable, "-I", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["mnist", "10", "False"]
    logits = torch.load(tmp_path / "logits.pt")
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-5)


def test_cli_exports_next_to_the_checkpoint_and_prints_the_check(
    mnist_ckpt: Path,
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "copy.ckpt"
    ckpt.write_bytes(mnist_ckpt.read_bytes())
    result = run_cli("export.py", f"ckpt_path={ckpt}", f"paths.log_dir={tmp_path}", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "copy.onnx").is_file()
    assert f"exported onnx to {tmp_path / 'copy.onnx'}" in result.stdout
    assert "differing predictions = 0" in result.stdout
    assert "images/s" in result.stdout and "threads" in result.stdout
