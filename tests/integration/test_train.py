"""Training end to end on real MNIST subsets: fit, test, checkpoints, TensorBoard, eval, the CLI.

(Quick fits on synthetic data, each schedule's lr, seeds and resuming: tests/unit/test_train.py.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mnist_lit.classifier import LitClassifier
from mnist_lit.eval import evaluate
from mnist_lit.train import train

from ..conftest import QUICK, compose_config, run_cli


def read_scalars(tensorboard_dir: Path) -> dict[str, list[float]]:
    """Scalars as TensorBoard's own reader sees them."""
    events = EventAccumulator(str(tensorboard_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def clear_files(run_dir: str) -> None:
    """Empty a run dir: the next run of the same test writes into the same one."""
    for path in Path(run_dir).rglob("*"):
        if path.is_file():
            path.unlink()


def test_fit_tests_best_checkpoint_and_logs_tensorboard(train_cfg, capsys) -> None:
    cfg = train_cfg("trainer.max_epochs=2", "model=mlp")
    value = train(cfg)
    run_dir = Path(cfg.paths.output_dir)

    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and any(c.startswith("epoch_") for c in checkpoints)
    assert "model:" in (run_dir / "config_tree.txt").read_text()  # the resolved config

    summary = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[mnist-lit]")]
    assert len(summary) == 1
    assert re.search(
        r"model=mlp test/acc=0\.\d{4} val/acc_best=0\.\d+ best_ckpt=\S+epoch_", summary[0]
    )

    scalars = read_scalars(run_dir / "tensorboard")
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"):
        assert len(scalars[tag]) == 2, tag  # one point per epoch
    assert "test/acc" in scalars and "lr-Adam" in scalars
    assert scalars["hp/val_acc_best"] == [pytest.approx(value)]
    assert 0.5 < scalars["hp/test_acc"][0] <= 1.0  # 8 batches already learn something

    # the HPARAMS tab: hyper-parameters with the final metrics as its metric columns
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    hparams = events.summary_metadata["_hparams_/session_start_info"].plugin_data
    assert hparams.plugin_name == "hparams"
    assert b"optimizer/lr" in hparams.content and b"model/choice" in hparams.content
    experiment = events.summary_metadata["_hparams_/experiment"].plugin_data.content
    assert b"hp/test_acc" in experiment

    # pictures: the first input batch, the confusion matrix and the worst mistakes
    images = set(events.Tags()["images"])
    assert {"inputs/train_batch", "test/confusion_matrix", "test/worst_mistakes"} <= images
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["metrics"]["test/acc"] == pytest.approx(scalars["hp/test_acc"][0])
    assert summary["epochs"] == 2 and summary["fit_seconds"] > 0


def test_checkpoint_loads_alone_and_eval_matches(train_cfg, tmp_path: Path) -> None:
    cfg = train_cfg("model=cnn", "model.channels=[8,16]", "model.hidden=32")
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"

    model = LitClassifier.load_from_checkpoint(ckpt, map_location="cpu")  # no other argument
    assert model.hparams.net["channels"] == [8, 16]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)

    eval_cfg = compose_config(
        "eval",
        [
            f"ckpt_path={ckpt}",
            "trainer=cpu",
            "+trainer.limit_test_batches=2",
            "+trainer.enable_progress_bar=false",
        ],
        tmp_path / "eval",
    )
    metrics = evaluate(eval_cfg)
    assert 0.0 < metrics["test/acc"] <= 1.0 and metrics["test/loss"] > 0


def test_same_seed_same_numbers(train_cfg) -> None:
    """Same seed on the CPU: the same test accuracy to the last digit, the same weights."""
    results = []
    for _ in range(2):
        cfg = train_cfg(
            "model=cnn", "model.channels=[8,16]", "model.hidden=32", "model.dropout=0.3"
        )
        train(cfg)
        model = LitClassifier.load_from_checkpoint(
            Path(cfg.paths.output_dir) / "checkpoints/last.ckpt"
        )
        scalars = read_scalars(Path(cfg.paths.output_dir) / "tensorboard")
        results.append((scalars["hp/test_acc"][0], scalars["hp/train_loss"][0], model.state_dict()))
        clear_files(cfg.paths.output_dir)
    (acc1, loss1, weights1), (acc2, loss2, weights2) = results
    assert acc1 == acc2 and loss1 == loss2
    assert all(torch.equal(weights1[k], weights2[k]) for k in weights1)


@pytest.mark.slow
def test_cli_run_and_multirun(tmp_path: Path, mnist_data_dir: Path) -> None:
    """``python train.py`` and a 2x2 ``-m`` sweep, as a user types them, into their own dirs."""
    quick = [o for o in QUICK if "progress" not in o] + ["trainer.max_epochs=1"]
    single = run_cli("train.py", "model=mlp", *quick, f"paths.log_dir={tmp_path}")
    assert single.returncode == 0, single.stderr[-3000:]
    runs = list((tmp_path / "train" / "runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / ".hydra" / "config.yaml").is_file() and (runs[0] / "train.log").is_file()
    assert "[mnist-lit] model=mlp test/acc=" in single.stdout
    output = single.stdout + single.stderr
    # each of Lightning's INFO lines once: Hydra's handler prints it ("[<time>][lightning...]
    # [INFO] - <message>"), and the handler `import lightning` adds must not print it again
    lightning_info = re.findall(r"^\[[^]]*\]\[lightning[\w.]*\]\[INFO\] - (.+)$", output, re.M)
    assert "Seed set to 42" in lightning_info
    printed = {message: output.count(message) for message in lightning_info}
    assert printed == dict.fromkeys(lightning_info, 1), printed

    sweep = run_cli(
        "train.py",
        "-m",
        "model=mlp,cnn",
        "optimizer=sgd,adam",
        "model.dropout=0.1",
        *quick,
        "test=false",
        f"paths.log_dir={tmp_path}",
        timeout=600,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "train" / "multiruns").iterdir()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        model = re.search(r"model=(\w+)", overrides).group(1)
        optimizer = re.search(r"optimizer=(\w+)", overrides).group(1)
        seen.add((model, optimizer))
        assert "val/acc" in read_scalars(job / "tensorboard")  # its own TensorBoard run
        assert (job / "checkpoints" / "last.ckpt").is_file()
    assert seen == {("mlp", "sgd"), ("mlp", "adam"), ("cnn", "sgd"), ("cnn", "adam")}

    # the sweep report, written by the Hydra callback when the multirun ended
    report = (sweep_dir / "report.md").read_text()
    assert "4 of 4 jobs finished" in report
    assert (sweep_dir / "report.png").is_file()
    rows = (sweep_dir / "report.csv").read_text().splitlines()
    assert len(rows) == 5
    for job in jobs:  # each row's numbers are the job's own
        val_best = json.loads((job / "metrics.json").read_text())["metrics"]["val/acc_best"]
        assert any(row.startswith(f"{job.name},") and str(val_best) in row for row in rows)
