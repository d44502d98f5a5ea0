"""One-line errors (``errors.py``), a class's refusal named by its config group
(``train.built_from``), the checkpoint a run resumes from (``train.check_ckpt_path``), and the
command line before Hydra (``cli.py``): the parts of a refused command, in-process."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from mnist_lit.checkpoints import check_ckpt_path
from mnist_lit.cli import ddp_rank_argv, sweep_jobs
from mnist_lit.errors import (
    BAD_INPUT,
    FAILED,
    UserError,
    remove_unstarted_run_dir,
    reported_errors,
    require_extra,
)
from mnist_lit.train import built_from

from ..conftest import compose_config, error_line


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


def test_a_refusal_removes_the_run_dir_it_never_used(tmp_path: Path, capsys) -> None:
    """Hydra makes the run dir before the task checks its values: a refusal removes it again,
    and never a run that trained (a checkpoint or results in it)."""
    unused, trained = tmp_path / "unused", tmp_path / "trained"
    (unused / ".hydra").mkdir(parents=True)
    (trained / "checkpoints").mkdir(parents=True)
    for run_dir in (unused, trained):
        with pytest.raises(SystemExit), reported_errors(unstarted_run_dir=run_dir):
            raise UserError("model.dropout=1.5 is invalid")
    assert not unused.exists() and trained.is_dir()
    remove_unstarted_run_dir(tmp_path / "missing")  # nothing there: nothing to do


def test_a_missing_extra_is_named_in_one_line() -> None:
    require_extra("core", "json")  # present: nothing said
    with pytest.raises(UserError) as caught:
        require_extra("serve", "json", "no_such_module_here")
    assert caught.value.exit_code == 2
    assert "no_such_module_here" in str(caught.value) and "pip install -e '.[serve]'" in str(
        caught.value
    )


def test_a_value_a_class_refuses_is_one_line_naming_its_group() -> None:
    with pytest.raises(UserError) as caught, built_from("trainer"):
        raise ValueError("`Trainer(devices=0)` value is not a valid input")
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("trainer: ") and "devices=0" in str(caught.value)


def test_a_sweep_is_split_into_its_jobs() -> None:
    jobs = sweep_jobs(["model=mlp,cnn", "seed=1,2", "optimizer=sgd"])
    assert len(jobs) == 4 and ["model=mlp", "seed=1", "optimizer=sgd"] in jobs
    assert sweep_jobs([]) == [[]]
    # an interval is a search space: its sweeper draws the values
    assert sweep_jobs(["optimizer.lr=interval(0.001,0.01)"]) == [[]]


def test_only_a_ddp_rank_lightning_started_gets_its_jobs_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MNIST_LIT_DDP_JOB_DIR", raising=False)
    assert ddp_rank_argv() is None
    monkeypatch.setenv("MNIST_LIT_DDP_JOB_DIR", str(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert ddp_rank_argv() is None  # rank 0 is the job itself
    monkeypatch.setenv("LOCAL_RANK", "1")
    argv = ddp_rank_argv()
    assert argv is not None and f"--config-path={tmp_path / '.hydra'}" in argv
    assert (tmp_path / ".pl_hydra_rank_1").is_dir()


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


def test_a_checkpoint_of_another_data_set_is_refused(tiny_ckpts: dict, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="data=synthetic"):
        check_ckpt_path(compose_config("train", [f"ckpt_path={tiny_ckpts['synthetic']}"], tmp_path))
