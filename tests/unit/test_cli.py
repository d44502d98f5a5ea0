"""The one wrapper of every entry point (``cli.run_entry_point``) and the one error type, run
in-process: the check before Hydra, the task inside it, a ``UserError`` as one line and its code."""

from __future__ import annotations

import errno
import gc
import os
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig

from mnist_lit.cli import (
    built_from,
    check_ckpt_path,
    collector_paused_until_task,
    run_entry_point,
)
from mnist_lit.errors import BAD_INPUT, FAILED, UserError, reported_errors

from ..conftest import compose_config, error_line


@pytest.fixture(autouse=True)
def _argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py"])  # run_entry_point sets it for Hydra


def test_user_error_is_one_line_with_its_exit_code() -> None:
    error = UserError("checkpoint x.ckpt\n   does not exist:\tpass another")
    assert str(error) == "checkpoint x.ckpt does not exist: pass another"
    assert error.exit_code == BAD_INPUT == 2
    assert UserError("failed", exit_code=FAILED).exit_code == 1


@pytest.mark.parametrize("code", [BAD_INPUT, FAILED])
def test_reported_errors_print_one_line_and_exit(code: int, capsys) -> None:
    with pytest.raises(SystemExit) as caught, reported_errors():
        raise UserError("model.dropout=1.5 is invalid", exit_code=code)
    assert caught.value.code == code
    assert capsys.readouterr().err == "error: model.dropout=1.5 is invalid\n"


def test_reported_errors_leave_other_errors_alone() -> None:
    with pytest.raises(ZeroDivisionError), reported_errors():
        raise ZeroDivisionError


@pytest.mark.parametrize("number", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_full_or_read_only_disk_is_one_line(number: int, capsys) -> None:
    with pytest.raises(SystemExit) as caught, reported_errors():
        raise OSError(number, os.strerror(number), "logs/run/checkpoints/last.ckpt")
    assert caught.value.code == FAILED
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "last.ckpt" in error_line(err)
    with pytest.raises(PermissionError), reported_errors():  # other OSErrors: not the disk
        raise PermissionError(errno.EACCES, "Permission denied")


def test_a_bad_command_line_stops_before_hydra(tmp_path: Path, capsys) -> None:
    """One line, exit code 2, the task never runs and no run dir is made."""
    ran: list[DictConfig] = []
    with pytest.raises(SystemExit) as caught:
        run_entry_point("train", ran.append, ["model.dropout=1.5", f"paths.log_dir={tmp_path}"])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert "model.dropout" in error_line(err) and out == ""
    assert ran == [] and list(tmp_path.iterdir()) == []


def test_a_bad_checkpoint_stops_before_hydra(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(SystemExit) as caught:
        run_entry_point("eval", print, [f"ckpt_path={missing}", f"paths.log_dir={tmp_path}"])
    assert caught.value.code == 2
    assert str(missing) in error_line(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == [], "a run dir was made"


def test_a_good_command_line_runs_the_task_in_its_run_dir(tmp_path: Path) -> None:
    seen: list[str] = []
    run_entry_point(
        "train",
        lambda cfg: seen.append(cfg.paths.output_dir),
        ["model=mlp", f"paths.log_dir={tmp_path}"],
    )
    (run,) = (tmp_path / "train" / "runs").iterdir()
    assert seen == [str(run)]
    assert (run / ".hydra" / "overrides.yaml").is_file()


def test_each_job_of_a_sweep_runs(tmp_path: Path) -> None:
    seeds: list[int] = []
    run_entry_point(
        "train", lambda cfg: seeds.append(cfg.seed), ["-m", "seed=1,2", f"paths.log_dir={tmp_path}"]
    )
    assert seeds == [1, 2]
    (sweep,) = (tmp_path / "train" / "multiruns").iterdir()
    assert (sweep / "report.md").is_file()  # the sweep report callback ran too


@pytest.mark.parametrize(
    ("raised", "code"),
    [(UserError("3 of 5 images could not be classified", FAILED), 1), (UserError("bad"), 2)],
)
def test_a_user_error_in_the_task_is_one_line_and_its_code(
    raised: UserError, code: int, tmp_path: Path, capsys
) -> None:
    def task(cfg: DictConfig) -> None:
        raise raised

    with pytest.raises(SystemExit) as caught:
        run_entry_point("train", task, [f"paths.log_dir={tmp_path}"])
    assert caught.value.code == code
    assert error_line(capsys.readouterr().err, alone=False) == f"error: {raised}"


def test_a_value_a_class_refuses_inside_the_task_is_exit_code_2(tmp_path: Path, capsys) -> None:
    def task(cfg: DictConfig) -> None:
        with built_from("trainer"):
            raise ValueError("`Trainer(devices=0)` value is not a valid input")

    with pytest.raises(SystemExit) as caught:
        run_entry_point("train", task, [f"paths.log_dir={tmp_path}"])
    assert caught.value.code == 2
    line = error_line(capsys.readouterr().err, alone=False)
    assert line.startswith("error: trainer: ") and "devices=0" in line


def test_without_the_check_each_job_still_checks_its_config(tmp_path: Path, capsys) -> None:
    """``check=False`` (a DDP rank whose rank 0 checked) skips the check before Hydra; the job's
    own check inside Hydra still refuses a bad value."""
    ran: list[DictConfig] = []
    with pytest.raises(SystemExit) as caught:
        run_entry_point(
            "train", ran.append, ["model.dropout=1.5", f"paths.log_dir={tmp_path}"], check=False
        )
    assert caught.value.code == 2 and ran == []
    assert "model.dropout" in error_line(capsys.readouterr().err, alone=False)


# ----------------------------------------------------------------------------- check_ckpt_path


@pytest.mark.parametrize("name", ["last", "best", "hpc", "registry"])
def test_lightnings_own_names_are_refused_with_resume_as_the_fix(name: str, tmp_path: Path) -> None:
    """They look in the new run's own empty dir: a fresh start, or a crash after an epoch."""
    with pytest.raises(UserError) as caught:
        check_ckpt_path(compose_config("train", [f"ckpt_path={name}"], tmp_path))
    assert caught.value.exit_code == 2 and "resume=" in str(caught.value)


def test_no_checkpoint_is_nothing_to_check(tmp_path: Path) -> None:
    check_ckpt_path(compose_config("train", [], tmp_path))


def test_a_checkpoint_to_resume_must_fit_the_model(tiny_ckpts: dict, tmp_path: Path) -> None:
    full = tiny_ckpts["full"]
    check_ckpt_path(
        compose_config(
            "train",
            [f"ckpt_path={full}", "model.channels=[4,8]", "model.hidden=16", "model.dropout=0.3"],
            tmp_path,
        )
    )  # another dropout rate changes no weight
    with pytest.raises(UserError) as caught:
        check_ckpt_path(compose_config("train", [f"ckpt_path={full}"], tmp_path))
    assert caught.value.exit_code == 2 and "model.hidden=16" in str(caught.value)


def test_a_checkpoint_to_load_need_not_resume(tiny_ckpts: dict, tmp_path: Path) -> None:
    """eval, predict and export load the weights: a weights-only checkpoint is fine for them."""
    cfg = compose_config("eval", [f"ckpt_path={tiny_ckpts['weights']}"], tmp_path)
    check_ckpt_path(cfg)
    with pytest.raises(UserError, match="data=synthetic"):
        check_ckpt_path(compose_config("eval", [f"ckpt_path={tiny_ckpts['synthetic']}"], tmp_path))


def test_the_collector_is_off_while_starting_and_frozen_out_of_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checks, composes and imports run with no cycle collection; the task runs with the
    collector on and what starting made frozen; a refused command line turns it back on."""
    calls: list[str] = []
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))  # none of pytest's frozen
    seen: list[bool] = []

    def check(cfg: DictConfig) -> None:
        seen.append(gc.isenabled())

    def task(cfg: DictConfig) -> None:
        seen.append(gc.isenabled())

    run_entry_point("train", task, [f"paths.log_dir={tmp_path}"], check_task=check)
    assert seen == [False, True] and calls == ["freeze"] and gc.isenabled()
    with pytest.raises(SystemExit):
        run_entry_point("train", task, ["model.dropout=1.5", f"paths.log_dir={tmp_path}"])
    assert gc.isenabled() and calls == ["freeze"]


def test_a_command_run_inside_another_leaves_the_collector_to_it() -> None:
    gc.disable()  # as the outer command has it
    try:
        with collector_paused_until_task():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer command turns it on
    finally:
        gc.enable()
