"""``resume=<run dir>|last``: the command line it becomes, on fake run dirs (a ``.hydra`` folder and
checkpoints copied from ``tiny_ckpts``). The killed-and-resumed run itself:
``tests/integration/test_resume.py``."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from mnist_lit.cli import (
    SLURM_JOB_FILE,
    accept_resumed_config,
    hydra_refusals,
    newest_intact_checkpoint,
    requeued_checkpoint,
    run_dirs,
)
from mnist_lit.cli import train_command_line as resume_command_line
from mnist_lit.config import unique_dir
from mnist_lit.errors import UserError, remove_unstarted_run_dir


def make_run(root: Path, name: str, overrides: list[str], checkpoints: dict[str, Path]) -> Path:
    """A run dir as train.py leaves it: its overrides and checkpoints (copied, in order, each
    newer than the one before)."""
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    for number, (relative, source) in enumerate(checkpoints.items()):
        path = run / "checkpoints" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, path)
        os.utime(path, (1_000_000 + number, 1_000_000 + number))
    return run


def _refused(argv: list[str], root: Path) -> str:
    with pytest.raises(UserError) as caught:
        resume_command_line(argv, root)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    return str(caught.value)


def test_without_resume_the_command_line_is_as_given(tmp_path: Path) -> None:
    assert resume_command_line(["model=cnn", "-m", "seed=1,2"], tmp_path) == [
        "model=cnn",
        "-m",
        "seed=1,2",
    ]


def test_resume_becomes_the_runs_overrides_pinned_to_its_dir(
    tiny_ckpts: dict, tmp_path: Path
) -> None:
    run = make_run(
        tmp_path,
        "2026-01-01_10-00-00",
        ["model=mlp", "trainer.max_epochs=2", "ckpt_path=null"],
        {"epoch_000.ckpt": tiny_ckpts["full"], "last.ckpt": tiny_ckpts["full"]},
    )
    argv = resume_command_line([f"resume={run}", "trainer.max_epochs=3"], tmp_path)
    assert argv == [
        "model=mlp",
        "trainer.max_epochs=3",  # given now: replaces the run's own
        f"hydra.run.dir={run.resolve()}",
        "hydra.output_subdir=.hydra/resume",  # the run's own .hydra: once this is accepted
        f"ckpt_path={(run / 'checkpoints' / 'last.ckpt').resolve()}",  # the newest
    ]


def test_resume_last_is_the_newest_run(tiny_ckpts: dict, tmp_path: Path) -> None:
    """The run started (or resumed) last, a single run or a sweep's job."""
    ckpts = {"last.ckpt": tiny_ckpts["full"]}
    runs = [
        make_run(tmp_path / "runs", "2026-01-02_09-00-00", ["seed=1"], ckpts),
        make_run(tmp_path / "multiruns" / "2026-01-01_10-00-00", "1", ["seed=2"], ckpts),
        make_run(tmp_path / "runs", "2026-01-01_09-00-00", ["seed=3"], ckpts),
    ]
    (tmp_path / "runs" / "2026-01-03_00-00-00").mkdir()  # not a run: no .hydra/overrides.yaml
    for run in runs:
        os.utime(run / ".hydra" / "overrides.yaml", (1_000_000,) * 2)
    for started, run in enumerate(runs):  # each in turn becomes the one started last
        os.utime(run / ".hydra" / "overrides.yaml", (2_000_000 + started,) * 2)
        assert run_dirs(tmp_path)[0] == run
        assert resume_command_line(["resume=last"], tmp_path)[0] == f"seed={started + 1}"


def test_a_damaged_newest_checkpoint_is_skipped_for_the_one_before(
    tiny_ckpts: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = make_run(
        tmp_path,
        "run",
        [],
        {
            "resume/step_0000003.ckpt": tiny_ckpts["full"],
            "resume/step_0000006.ckpt": tiny_ckpts["full"],
        },
    )
    newest = run / "checkpoints" / "resume" / "step_0000006.ckpt"
    stat = newest.stat()
    newest.write_bytes(newest.read_bytes()[: stat.st_size * 9 // 10])
    os.utime(newest, (stat.st_atime, stat.st_mtime))
    with caplog.at_level(logging.WARNING, logger="mnist_lit.cli"):
        assert newest_intact_checkpoint(run) == run / "checkpoints" / "resume" / "step_0000003.ckpt"
    assert str(newest) in caplog.text


def test_weights_only_checkpoints_cannot_be_resumed_from(tiny_ckpts: dict, tmp_path: Path) -> None:
    run = make_run(tmp_path, "run", [], {"last.ckpt": tiny_ckpts["weights"]})
    assert str(run / "checkpoints") in _refused([f"resume={run}"], tmp_path)


def test_a_run_with_no_checkpoint_yet(tmp_path: Path) -> None:
    run = make_run(tmp_path, "run", ["model=mlp"], {})
    assert str(run) in _refused([f"resume={run}"], tmp_path)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["resume=/no/such/run"], "resume=/no/such/run"),
        (["resume=last"], "resume=last"),
        (["-m", "resume=/x"], "resume="),
        (["--multirun", "resume=/x"], "resume="),
    ],
)
def test_resume_errors_name_what_was_given(argv: list[str], named: str, tmp_path: Path) -> None:
    message = _refused(argv, tmp_path)
    assert named in message
    if argv == ["resume=last"]:
        assert str(tmp_path) in message  # where it looked


def test_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    assert str(tmp_path) in _refused([f"resume={tmp_path}"], tmp_path)


def test_a_run_dir_taken_by_another_process_is_not_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Runs started in the same second ask for the same time-stamped dir; mkdir decides."""
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)  # before Hydra runs a job
    asked = str(tmp_path / "runs" / "2026-12-02_12-00-00")
    Path(asked).mkdir(parents=True)  # another process's run
    (tmp_path / "runs" / "2026-12-02_12-00-00_1").mkdir()  # and a third's
    mine = unique_dir(asked)
    assert mine == f"{asked}_2" and Path(mine).is_dir()
    assert unique_dir(asked) == mine  # Hydra resolves the run dir more than once


def test_an_empty_run_dir_is_refused(tmp_path: Path) -> None:
    for key in ("hydra.run.dir", "hydra.sweep.dir"):
        with pytest.raises(UserError) as caught, hydra_refusals("train", [f"{key}="]):
            pass
        assert caught.value.exit_code == 2 and key in str(caught.value)


def test_a_resume_that_is_refused_leaves_the_runs_overrides(tmp_path: Path) -> None:
    """Hydra writes a resume's files to .hydra/resume/; they become the run's once accepted."""
    run = tmp_path / "run"
    (run / ".hydra" / "resume").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- trainer.max_epochs=2\n")
    (run / ".hydra" / "resume" / "overrides.yaml").write_text("- trainer.devices=0\n")
    # refused: the trainer was never built, accept_resumed_config never ran; the next resume
    assert resume_overrides(run) == ["trainer.max_epochs=2"]
    (run / ".hydra" / "resume" / "overrides.yaml").write_text("- trainer.max_epochs=4\n")
    accept_resumed_config(run)
    assert resume_overrides(run) == ["trainer.max_epochs=4"]
    assert not (run / ".hydra" / "resume").exists()
    accept_resumed_config(run)  # a run that was not resumed: nothing to do


def resume_overrides(run: Path) -> list[str]:
    return yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())


def test_resuming_removes_what_killed_checkpoint_writes_left(
    tiny_ckpts: dict, tmp_path: Path
) -> None:
    run = make_run(tmp_path, "run", ["seed=1"], {"last.ckpt": tiny_ckpts["full"]})
    leftovers = [
        run / "checkpoints" / ".last.ckpt.a1b2c3.tmp",
        run / "checkpoints" / "resume" / ".step_0000006.ckpt.x9y8.tmp",
    ]
    for leftover in leftovers:
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"half a checkpoint")
    resume_command_line([f"resume={run}"], tmp_path)
    assert not any(p.exists() for p in leftovers)
    assert (run / "checkpoints" / "last.ckpt").exists()


def test_a_run_dir_asked_for_during_a_multirun_is_not_claimed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lightning reads a sweep job's hydra.run.dir to start DDP ranks: no stray runs/ dir."""
    sweeping = SimpleNamespace(mode=RunMode.MULTIRUN)
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: sweeping))
    asked = str(tmp_path / "runs" / "2026-12-02_12-00-00")
    assert unique_dir(asked, "RUN") == asked and not (tmp_path / "runs").exists()
    sweep = str(tmp_path / "multiruns" / "2026-12-02_12-00-00")
    assert unique_dir(sweep, "MULTIRUN") == sweep and Path(sweep).is_dir()


def test_a_run_refused_before_it_trained_leaves_no_run_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    refused = Path(unique_dir(str(tmp_path / "runs" / "refused")))
    (refused / ".hydra").mkdir()
    (refused / "train.log").write_text("...")
    started = Path(unique_dir(str(tmp_path / "runs" / "started")))
    (started / "checkpoints").mkdir()
    other = tmp_path / "runs" / "yours"  # a folder of yours passed as hydra.run.dir=
    (other / ".hydra").mkdir(parents=True)
    (other / "notes.txt").write_text("keep me")
    for run_dir in (refused, started, other):
        remove_unstarted_run_dir(run_dir)
    assert not refused.exists() and started.is_dir() and other.is_dir()


# ----------------------------------------------------------------------------- requeued SLURM jobs


@pytest.fixture
def requeued_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """SLURM job 4242 running again after a requeue."""
    for key in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")


def _slurm_run(tiny_ckpts: dict, root: Path, name: str, job: str) -> Path:
    run = make_run(root, name, ["model=mlp"], {"resume/step_0000003.ckpt": tiny_ckpts["full"]})
    (run / SLURM_JOB_FILE).write_text(job)
    return run


def test_a_requeued_job_resumes_the_run_it_pinned(
    tiny_ckpts: dict, tmp_path: Path, requeued_job: None
) -> None:
    run = _slurm_run(tiny_ckpts, tmp_path, "slurm-4242", "4242")
    argv = resume_command_line(["model=mlp", f"hydra.run.dir={run}"], tmp_path)
    assert argv[-3:] == [
        f"hydra.run.dir={run.resolve()}",
        "hydra.output_subdir=.hydra/resume",
        f"ckpt_path={(run / 'checkpoints' / 'resume' / 'step_0000003.ckpt').resolve()}",
    ]
    assert argv.count(f"hydra.run.dir={run.resolve()}") == 1


def test_a_requeued_job_finds_its_time_stamped_run_by_its_id(
    tiny_ckpts: dict, tmp_path: Path, requeued_job: None
) -> None:
    logs = tmp_path / "logs" / "train"
    _slurm_run(tiny_ckpts, logs / "runs", "2026-01-01_10-00-00", "4241")  # another job's
    mine = _slurm_run(tiny_ckpts, logs / "multiruns" / "2026-01-01_11-00-00", "1", "4242")
    argv = resume_command_line(["model=mlp"], logs)
    assert f"hydra.run.dir={mine.resolve()}" in argv
    other = tmp_path / "elsewhere" / "train"  # paths.log_dir= given: its train/ is searched
    elsewhere = _slurm_run(tiny_ckpts, other / "runs", "2026-01-01_12-00-00", "4242")
    argv = resume_command_line(["model=mlp", f"paths.log_dir={other.parent}"], logs)
    assert f"hydra.run.dir={elsewhere.resolve()}" in argv


@pytest.mark.parametrize("case", ["first run", "no checkpoint yet", "another job", "resume given"])
def test_what_a_requeue_leaves_as_it_is(
    case: str, tiny_ckpts: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0" if case == "first run" else "1")
    run = _slurm_run(tiny_ckpts, tmp_path, "slurm", "4241" if case == "another job" else "4242")
    if case == "no checkpoint yet":
        shutil.rmtree(run / "checkpoints")
    argv = ["model=mlp", f"hydra.run.dir={run}"]
    if case == "resume given":  # resume= as usual, once
        argv = resume_command_line(["model=mlp", f"resume={run}"], tmp_path)
        assert argv.count(f"hydra.run.dir={run.resolve()}") == 1
    else:
        assert resume_command_line(argv, tmp_path) == argv
        assert requeued_checkpoint(run) is None


def test_a_requeued_sweep_job_resumes_from_its_checkpoint(
    tiny_ckpts: dict, tmp_path: Path, requeued_job: None
) -> None:
    run = _slurm_run(tiny_ckpts, tmp_path, "0", "4242")
    assert requeued_checkpoint(run) == str(run / "checkpoints" / "resume" / "step_0000003.ckpt")


# ----------------------------------------------------------------------------- a run dir is data


@pytest.mark.parametrize(
    "saved",
    [
        "hydra.callbacks.x._target_=builtins.print",
        "+hydra.job.env_set.X=1",
        "+model._target_=builtins.exec",
        "model.dropout=${oc.env:HOME}",
    ],
)
def test_a_saved_run_that_would_run_code_is_refused(
    saved: str, tiny_ckpts: dict, tmp_path: Path
) -> None:
    """resume= replays only what a user types for train.py: Hydra's own keys, a _target_ or an
    interpolation written into .hydra/overrides.yaml is refused in one line, nothing run."""
    run = make_run(tmp_path, "run", ["seed=1", saved], {"last.ckpt": tiny_ckpts["full"]})
    message = _refused([f"resume={run}"], tmp_path)
    assert saved in message and "does not replay" in message


def test_a_refused_resume_leaves_the_runs_overrides_and_an_accepted_one_takes_them(
    train_cfg,
) -> None:
    """The schedule check refuses a resume once fitting starts; .hydra/ is left as it was. A
    resume that trains makes its overrides the run's."""
    from mnist_lit.train import train

    cfg = train_cfg("model=mlp", "trainer.max_epochs=1")
    train(cfg)
    run = Path(cfg.paths.output_dir)
    (run / ".hydra" / "resume").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- trainer.max_epochs=1\n")
    (run / ".hydra" / "resume" / "overrides.yaml").write_text("- trainer.max_epochs=3\n")
    last = run / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match="OneCycleLR was planned"):
        train(train_cfg("model=mlp", "trainer.max_epochs=3", f"ckpt_path={last}"))
    assert resume_overrides(run) == ["trainer.max_epochs=1"]
    (run / ".hydra" / "resume" / "overrides.yaml").write_text("- scheduler=none\n")
    train(train_cfg("model=mlp", "trainer.max_epochs=2", "scheduler=none", f"ckpt_path={last}"))
    assert resume_overrides(run) == ["scheduler=none"]


def test_two_trainings_in_one_run_dir_are_refused(train_cfg) -> None:
    from filelock import FileLock

    from mnist_lit.train import train

    cfg = train_cfg("model=mlp", "trainer.max_epochs=1")
    run = Path(cfg.paths.output_dir)
    run.mkdir(parents=True, exist_ok=True)
    with FileLock(run / ".train.lock"), pytest.raises(UserError) as caught:
        train(cfg)
    assert caught.value.exit_code == 2 and "another process is training" in str(caught.value)
    assert not (run / "checkpoints").exists()
