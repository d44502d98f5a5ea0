"""Sweep reports from job folders: sorting, seed groups (mean ± std, n), effects, CSV, plot; and
the Hydra callback that writes them when a multirun ends."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hydra_plugins.mnist_lit_sweeper import SweepReport
from mnist_lit.errors import UserError
from mnist_lit.sweeps.jobs import RUN_SUMMARY_FILE, load_jobs, rounded
from mnist_lit.sweeps.plots import plot_figure
from mnist_lit.sweeps.report import main, write_report
from mnist_lit.sweeps.studies import STUDY_FILE


def make_job(
    sweep: Path,
    number: int,
    overrides: list[str],
    seed: int,
    test: float,
    train: float = 0.99,
    val: float = 0.98,
) -> None:
    """A finished job folder as train.py leaves it (only the files the report reads)."""
    job = sweep / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    metrics = {"test/acc": test, "val/acc_best": val, "val/acc": val, "train/acc": train}
    summary = {"seed": seed, "metrics": metrics, "epochs": 2, "fit_seconds": 10.0 + number}
    (job / "metrics.json").write_text(json.dumps(summary))


@pytest.fixture
def ablation(tmp_path: Path) -> Path:
    """2 dropout values x 3 seeds for one model: dropout adds 0.2 +- 0.1 points, closes the gap."""
    number = 0
    for seed, delta in zip((1, 2, 3), (0.001, 0.002, 0.003), strict=True):
        for dropout, test, train in (("0.0", 0.980, 0.999), ("0.3", 0.980 + delta, 0.985)):
            overrides = ["model=mlp", f"model.dropout={dropout}", f"seed={seed}"]
            make_job(tmp_path, number, overrides, seed, test, train=train, val=0.98)
            number += 1
    return tmp_path


def test_groups_seeds_with_mean_std_and_n(ablation: Path) -> None:
    text = write_report(ablation).read_text()
    assert "6 of 6 jobs finished" in text
    assert "Common to every job: `model=mlp`" in text
    # mean test acc with dropout: 98.2 +- 0.1 over 3 seeds, listed first (sorted)
    configs = text.split("## Configs")[1].split("##")[0]
    rows = [r for r in configs.splitlines() if r.startswith("| model.dropout")]
    assert rows[0].startswith(
        "| model.dropout=0.3 | 3 | 98.00 ± 0.00 | 98.20 ± 0.10 | 0.50 ± 0.00 |"
    )
    assert rows[1].startswith(
        "| model.dropout=0.0 | 3 | 98.00 ± 0.00 | 98.00 ± 0.00 | 1.90 ± 0.00 |"
    )


def test_effects_are_paired_by_seed(ablation: Path) -> None:
    text = write_report(ablation).read_text()
    effect = next(line for line in text.splitlines() if "model.dropout 0.0 → 0.3" in line)
    assert "test/acc by +0.20 ± 0.10 points" in effect
    assert (
        "gap by -1.40 ± 0.00 points" in effect
    )  # 99.9-98 = 1.9 -> 98.5-98 = 0.5, the same each seed
    assert "n = 3 pairs" in effect


def test_csv_has_one_sorted_row_per_job(ablation: Path) -> None:
    write_report(ablation)
    rows = list(csv.DictReader((ablation / "report.csv").open()))
    assert len(rows) == 6
    accuracies = [float(r["test_acc"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)
    assert rows[0]["overrides"] == "model=mlp model.dropout=0.3 seed=3"
    assert (ablation / "report.png").stat().st_size > 1000


def test_unfinished_jobs_are_listed(tmp_path: Path) -> None:
    make_job(tmp_path, 0, ["model=cnn"], 42, 0.99)
    (tmp_path / "1" / ".hydra").mkdir(parents=True)
    (tmp_path / "1" / ".hydra" / "overrides.yaml").write_text("- model=mlp\n")
    text = write_report(tmp_path).read_text()
    assert "1 of 2 jobs finished" in text
    assert "| 1 | model=mlp | - | did not finish |" in text


@pytest.mark.parametrize("what", ["missing", "no jobs"])
def test_cli_errors_are_one_line(what: str, tmp_path: Path, capsys) -> None:
    """``python -m mnist_lit.sweeps.report``: a folder that is not a multirun is one line, exit
    code 2."""
    sweep_dir = tmp_path / "missing" if what == "missing" else tmp_path
    with pytest.raises(SystemExit) as caught:
        main([str(sweep_dir)])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith("error: ") and str(sweep_dir) in err


def test_cli_prints_the_report(ablation: Path, capsys) -> None:
    main([str(ablation)])
    assert "6 of 6 jobs finished" in capsys.readouterr().out
    assert (ablation / "report.md").is_file() and (ablation / "report.csv").is_file()


def test_write_report_refuses_a_folder_without_jobs(tmp_path: Path) -> None:
    with pytest.raises(UserError) as caught:
        write_report(tmp_path)
    assert caught.value.exit_code == 2 and str(tmp_path) in str(caught.value)


def _optuna_like(sweep: Path, overrides: list[list[str]]) -> Path:
    """Untested jobs (``test: false``) with sampled float values, as an Optuna search leaves."""
    for number, sampled in enumerate(overrides):
        job = sweep / str(number)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in sampled))
        metrics = {"val/acc_best": 0.9 + number / 100, "val/acc": 0.699999988079071}
        metrics["train/acc"] = 0.5
        summary = {"seed": 42, "metrics": metrics, "epochs": 1, "fit_seconds": 3.0}
        (job / "metrics.json").write_text(json.dumps(summary))
    return sweep


def test_an_untested_sweep_shows_each_accuracy_once_and_values_to_3_digits(
    tmp_path: Path,
) -> None:
    sweep = _optuna_like(
        tmp_path,
        [
            ["optimizer.lr=0.000587194737873281", "model.width=2.0", "model.batchnorm=True"],
            ["optimizer.lr=0.008634780686462019", "model.width=0.5", "model.batchnorm=False"],
            ["optimizer.lr=7.350659626187651e-05", "model.width=2.0", "model.batchnorm=True"],
        ],
    )
    text = write_report(sweep).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| job |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert len(cells) == len(set(cells)), header  # no column twice
    assert cells.count("val/acc_best") == 1 and "test/acc" not in cells
    assert "optimizer.lr=0.000587 " in text and "optimizer.lr=7.35e-05 " in text
    assert "model.width=2.0 " in text  # a float stays one
    assert "0.000587194737873281" not in text and "| 92.00 |" in text
    rows = list(csv.DictReader((sweep / "report.csv").open()))
    assert {row["val_acc"] for row in rows} == {"0.699999988079071"}  # the CSV: every digit


@pytest.mark.parametrize("digits", ["0.000587194737873281", "12345.678", "1e-07", "3", "inf", "a"])
def test_values_are_rounded_to_3_significant_digits(digits: str) -> None:
    expected = {"0.000587194737873281": "0.000587", "12345.678": "1.23e+04", "1e-07": "1e-07"}
    assert rounded(digits) == expected.get(digits, digits)


def test_plot_labels_and_titles_lie_inside_the_figure_at_any_length(tmp_path: Path) -> None:
    """Very long overrides: every text of the saved figure lies inside it (measured by the
    renderer at the saved resolution, not by eye)."""
    from matplotlib.text import Text

    long_value = "x" * 150
    sweep = _optuna_like(
        tmp_path,
        [
            [f"+model.note={long_value}", "optimizer.lr=0.1", *(f"+k{i}=v{i}" for i in range(30))],
            ["+model.note=short", "optimizer.lr=0.2"],
            ["+model.note=short", "optimizer.lr=0.3", "model.width=0.5"],
        ],
    )
    fig = plot_figure(load_jobs(sweep))
    fig.set_dpi(120)
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    inside = fig.bbox
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert any(long_value[:40] in t.get_text() for t in texts)  # the long label is drawn
    for text in texts:
        box = text.get_window_extent(renderer)
        assert inside.x0 - 1 <= box.x0 and box.x1 <= inside.x1 + 1, text.get_text()[:60]
        assert inside.y0 - 1 <= box.y0 and box.y1 <= inside.y1 + 1, text.get_text()[:60]


def test_the_report_reads_the_file_train_py_writes() -> None:
    from mnist_lit.train import RESULTS_FILE

    assert RUN_SUMMARY_FILE == RESULTS_FILE


def _multirun_end(sweep_dir: Path) -> None:
    """What Hydra calls when a multirun ends, as conf/hydra/default.yaml configures it."""
    SweepReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}}))


def test_every_multirun_ends_with_its_report(ablation: Path, capsys) -> None:
    _multirun_end(ablation)
    assert capsys.readouterr().out == f"[mnist-lit] sweep report: {ablation / 'report.md'}\n"
    assert "6 of 6 jobs finished" in (ablation / "report.md").read_text()


def test_without_the_sweeps_extra_a_study_report_is_one_line(
    ablation: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep dir of an Optuna study, and no optuna to read the study with: the multirun still
    ends well, with one line that names the extra (a grid sweep's report needs no extra)."""
    (ablation / STUDY_FILE).write_text("study_name: search\nstorage: sqlite:///nowhere.db\n")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else find_spec(name)
    )
    _multirun_end(ablation)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("[mnist-lit] no sweep report: ")
    assert "optuna" in out and "pip install -e '.[sweeps]'" in out
    assert not (ablation / "report.md").exists()


def test_an_optuna_studys_report_draws_every_optuna_view(tmp_path: Path) -> None:
    """A study of 6 completed trials and a failed one: Optuna's history, parameter importances
    and parallel coordinates are drawn, and the importances count the completed trials only."""
    import optuna

    from mnist_lit.sweeps.plots import importances_figure
    from mnist_lit.sweeps.studies import open_storage, resume_study

    storage = f"sqlite:///{tmp_path / 'search.db'}"
    study = optuna.create_study(
        study_name="search", storage=open_storage(storage), direction="maximize"
    )
    sweep = tmp_path / "sweep"
    resume_study(study, storage, ["hparams_search=optuna"], 7, sweep)
    for number in range(7):
        trial = study.ask()
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-2, log=True)
        batchnorm = trial.suggest_categorical("model.batchnorm", [True, False])
        sampled = [f"optimizer.lr={lr}", f"model.batchnorm={batchnorm}"]
        if number == 3:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            (sweep / "3" / ".hydra").mkdir(parents=True)
            (sweep / "3" / ".hydra" / "overrides.yaml").write_text("[]\n")
            continue
        study.tell(trial, 0.9 + lr + 0.01 * batchnorm)
        make_job(sweep, number, sampled, seed=42, test=0.9, val=0.9 + lr)

    write_report(sweep)
    for view in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (sweep / f"{view}.png").stat().st_size > 1000, view
    fig = importances_figure(study, "val/acc_best")
    titles = [fig.axes[0].get_title(loc) for loc in ("left", "center", "right")]
    assert titles == ["Parameter importances, 6 completed trials", "", ""]
