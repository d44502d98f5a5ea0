"""How ``serve.py`` finds the model to serve (a run dir, ``last``, ``runtime=onnx``'s export) and
what it refuses before the server loads (``serving.check_serve``): each a one-line
``UserError``, in-process. (The app itself: test_serve.py; the real command:
tests/integration/test_serve.py.)
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from mnist_lit.errors import UserError
from mnist_lit.serving import (
    check_serve,
    check_worker_memory,
    model_command_line,
    run_checkpoint,
    served_file,
    usable_cpus,
)
from mnist_lit.serving.server import check_port_free

from ..conftest import compose_config


def test_a_run_dir_serves_its_best_checkpoint_else_last(tiny_ckpts: dict, tmp_path: Path) -> None:
    run = tiny_ckpts["run"]
    assert run_checkpoint(run) == run / "checkpoints" / "last.ckpt"
    best = tmp_path / "run" / "checkpoints" / "epoch_003.ckpt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"")
    (tmp_path / "run" / "metrics.json").write_text(json.dumps({"best_ckpt": str(best)}))
    assert run_checkpoint(tmp_path / "run") == best
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no best checkpoint in metrics\.json"):
        run_checkpoint(tmp_path / "empty")


def test_a_copied_run_dir_serves_its_own_best_checkpoint(tmp_path: Path) -> None:
    """metrics.json names the best checkpoint by its absolute path: in a copy that is the
    original's file, so it is looked up by name in the copy's checkpoints/."""
    original, copy = tmp_path / "original", tmp_path / "copy"
    for run in (original, copy):
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "epoch_003.ckpt").write_bytes(b"")
        best = original / "checkpoints" / "epoch_003.ckpt"
        (run / "metrics.json").write_text(json.dumps({"best_ckpt": str(best)}))
    assert run_checkpoint(copy) == copy / "checkpoints" / "epoch_003.ckpt"
    (copy / "checkpoints" / "epoch_003.ckpt").unlink()
    (copy / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run_checkpoint(copy) == copy / "checkpoints" / "last.ckpt"


def test_ckpt_path_last_is_the_run_started_last(tiny_ckpts: dict, tmp_path: Path) -> None:
    logs = tmp_path / "logs" / "train"
    run = logs / "runs" / "2026-01-01_00-00-00"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("[]\n")
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    argv = model_command_line(["ckpt_path=last", "port=9000"], logs)
    assert argv == [f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "port=9000"]
    assert model_command_line([f"ckpt_path={run}"], logs) == argv[:1]
    assert model_command_line(["ckpt_path=a.onnx"], logs) == ["ckpt_path=a.onnx"]
    with pytest.raises(UserError, match="found no run with a checkpoint"):
        model_command_line(["ckpt_path=last"], tmp_path / "nothing")
    # a newer run stopped before its first checkpoint is passed over
    newer = logs / "multiruns" / "2026-01-02_00-00-00" / "0"
    (newer / ".hydra").mkdir(parents=True)
    assert model_command_line(["ckpt_path=last"], logs) == argv[:1]


def serve_cfg(tmp_path: Path, *overrides: str):
    return compose_config("serve", list(overrides), tmp_path / "run")


def test_runtime_onnx_serves_the_export_beside_the_checkpoint(
    tiny_ckpts: dict, tmp_path: Path
) -> None:
    ckpt = tiny_ckpts["full"]
    assert check_serve(serve_cfg(tmp_path, f"ckpt_path={ckpt}")) == ckpt
    onnx = serve_cfg(tmp_path, f"ckpt_path={ckpt}", "runtime=onnx")
    with pytest.raises(UserError, match=r"runtime=onnx serves .*last\.onnx, which does not exist"):
        check_serve(onnx)
    exported = tmp_path / "exported" / "model.onnx"
    exported.parent.mkdir()
    exported.write_bytes(b"")  # onnxruntime reads it when the server loads
    beside = serve_cfg(tmp_path, f"ckpt_path={exported.with_suffix('.ckpt')}", "runtime=onnx")
    assert served_file(beside) == exported
    with pytest.raises(UserError, match=r"model\.onnx does not exist"):
        check_serve(serve_cfg(tmp_path, f"ckpt_path={tmp_path / 'model.onnx'}"))


def test_export_missing_exports_the_checkpoint_first(
    tiny_ckpts: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``export_missing=true`` (make serve): the missing ``.onnx`` is exported, then served;
    the export itself (``python export.py``, a subprocess) is replaced by a file written here."""
    import mnist_lit.serving as serving

    ckpt = tmp_path / "run" / "epoch_003.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(tiny_ckpts["full"].read_bytes())
    asked: list[Path] = []

    def export_beside(checkpoint: Path, log_dir: str) -> None:
        asked.append(checkpoint)
        checkpoint.with_suffix(".onnx").write_bytes(b"")

    monkeypatch.setattr(serving, "export_beside", export_beside)
    refused = serve_cfg(tmp_path, f"ckpt_path={ckpt}", "runtime=onnx")
    with pytest.raises(UserError, match="pass export_missing=true"):
        served_file(refused)
    assert asked == []
    cfg = serve_cfg(tmp_path, f"ckpt_path={ckpt}", "runtime=onnx", "export_missing=true")
    assert served_file(cfg) == ckpt.with_suffix(".onnx") and asked == [ckpt]
    assert served_file(cfg) == ckpt.with_suffix(".onnx") and asked == [ckpt]  # once


def test_a_checkpoint_it_cannot_serve_is_refused_before_the_server_loads(
    tiny_ckpts: dict, tmp_path: Path
) -> None:
    (tmp_path / "bytes.ckpt").write_bytes(b"not a checkpoint")
    refusals = {
        tmp_path / "missing.ckpt": "missing.ckpt does not exist",
        tmp_path / "bytes.ckpt": "is not a LitClassifier checkpoint",
    }
    for path, expected in refusals.items():
        with pytest.raises(UserError) as caught:
            check_serve(serve_cfg(tmp_path, f"ckpt_path={path}"))
        assert caught.value.exit_code == 2 and expected in str(caught.value), path


@pytest.mark.parametrize(
    "override, key",
    [
        ("port=70000", "port"),
        ("workers=0", "workers"),
        ("runtime=tensorflow", "runtime"),
        ("limits.max_batch=0", "limits.max_batch"),
        ("limits.max_body_bytes=10", "limits.max_body_bytes"),
        ("limits.max_request_pixels=10", "limits.max_request_pixels"),
        ("+limits.max_pixel=5", "limits.max_pixel"),
    ],
)
def test_serve_config_values_are_checked_before_any_work(
    tiny_ckpts: dict, tmp_path: Path, override: str, key: str
) -> None:
    with pytest.raises(UserError, match=re.escape(key)):
        check_serve(serve_cfg(tmp_path, f"ckpt_path={tiny_ckpts['full']}", override))


def test_more_workers_than_the_cpus_this_process_may_use_is_refused(
    tiny_ckpts: dict, tmp_path: Path
) -> None:
    cpus = usable_cpus()
    assert 1 <= cpus <= (os.cpu_count() or 1)
    with pytest.raises(UserError) as caught:
        check_serve(serve_cfg(tmp_path, f"ckpt_path={tiny_ckpts['full']}", "workers=1000"))
    assert caught.value.exit_code == 2
    assert "workers=1000" in str(caught.value) and f"workers={cpus} or fewer" in str(caught.value)
    ok = serve_cfg(tmp_path, f"ckpt_path={tiny_ckpts['full']}", f"workers={cpus}")
    assert check_serve(ok) == tiny_ckpts["full"]


def test_more_workers_than_memory_holds_is_refused() -> None:
    gib = 2**30
    check_worker_memory(4, per_worker=gib, available=4 * gib)
    check_worker_memory(1, per_worker=8 * gib, available=gib)  # one: the process already loaded
    with pytest.raises(UserError) as caught:
        check_worker_memory(16, per_worker=gib, available=6 * gib + 1)
    assert caught.value.exit_code == 2
    assert "workers=16" in str(caught.value) and "workers=6 or fewer" in str(caught.value)
    with pytest.raises(UserError, match="workers=1 "):
        check_worker_memory(2, per_worker=gib, available=gib // 2)


def test_a_port_in_use_is_one_line_before_uvicorn_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(
            UserError, match=f"cannot listen on 127.0.0.1:{port}.*pass another port"
        ):
            check_port_free("127.0.0.1", port)
