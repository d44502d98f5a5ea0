"""``python -m mnist_lit.cluster [overrides]``: print the SLURM job a sweep would submit.

``python train.py -m hydra/launcher=slurm trainer=ddp_multinode [overrides]`` hands the jobs of a
sweep to Hydra's submitit launcher, which writes an sbatch script and runs ``sbatch``. A mistake
there costs a trip through the queue, so this composes the same config the way Hydra's multirun
does, checks every job the way train.py does, checks that SLURM and Lightning agree on nodes and
tasks per node, and prints the sbatch script submitit would write and the job each array task runs,
with what a preemption does to it (``slurm.RequeueOnPreemption``, which ``hydra/launcher=slurm``
adds to the callbacks). ``hydra/launcher=slurm`` and ``trainer=ddp_multinode`` are added unless the
overrides choose others.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import submitit
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.errors import OverrideParseException
from hydra.types import HydraContext, RunMode
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)
from omegaconf import DictConfig, OmegaConf, open_dict

from mnist_lit.cli import hydra_refusals
from mnist_lit.compat import (
    hydra_multirun_internals,
    sbatch_script_text,
    slurm_executor_without_srun,
    submitit_command,
)
from mnist_lit.config import CONFIG_DIR, check, unique_dir
from mnist_lit.errors import UserError, reported_errors

Callbacks, BasicSweeper = hydra_multirun_internals()

#: what the dry run adds unless the command line picks another option of the group
DEFAULT_CHOICES = {"hydra/launcher": "slurm", "trainer": "ddp_multinode"}
USAGE = """usage: python -m mnist_lit.cluster [overrides]

Prints the sbatch script and the jobs that
  python train.py -m hydra/launcher=slurm trainer=ddp_multinode [overrides]
would submit to SLURM, after checking them; submits nothing. Examples:
  python -m mnist_lit.cluster trainer.num_nodes=2 trainer.devices=4 hydra.launcher.partition=gpu
  python -m mnist_lit.cluster trainer=gpu seed=1,2,3     # 3 single-GPU jobs, one array job
  python -m mnist_lit.cluster trainer=cpu seed=1,2       # CPU jobs: no GPU asked for"""
#: the ``_target_`` of ``hydra/launcher=slurm``: submitit's SLURM launcher, with a refused sbatch in
#: one line (by name: Hydra's plugin scan imports it); submitit's own launcher submits the same jobs
SLURM_LAUNCHER = "hydra_plugins.mnist_lit_cluster.SlurmLauncher"
SLURM_LAUNCHERS = {
    SLURM_LAUNCHER,
    f"{SubmititSlurmLauncher.__module__}.{SubmititSlurmLauncher.__qualname__}",
}
#: the ``_target_`` of the callback that stops and requeues a preempted job (by name: the dry run
#: loads no Lightning)
REQUEUE_CALLBACK = "mnist_lit.cluster.slurm.RequeueOnPreemption"


@dataclass
class Job:
    """One job of the sweep: its overrides, its run dir, and what Lightning will be told."""

    overrides: list[str]
    run_dir: str
    num_nodes: Any
    devices: Any
    #: the callbacks key of ``RequeueOnPreemption`` in its config, if it has one
    requeue_callback: str | None = None


def with_default_choices(overrides: Sequence[str]) -> list[str]:
    """``hydra/launcher=slurm trainer=ddp_multinode`` first, unless ``overrides`` set the group."""
    try:
        chosen = {o.key_or_group for o in OverridesParser.create().parse_overrides(list(overrides))}
    except OverrideParseException:
        chosen = set()  # check_command_line reports it
    added = [
        f"{group}={option}" for group, option in DEFAULT_CHOICES.items() if group not in chosen
    ]
    return [*added, *overrides]


def dry_run(overrides: Sequence[str]) -> str:
    """The sbatch script(s) and jobs of ``python train.py -m <overrides>``, as text.

    Composes the config as ``Hydra.multirun`` does, builds the launcher with Hydra's plugin
    loader, splits the jobs as ``BasicSweeper.sweep`` does and composes each as the launcher does.
    Hydra has no public API for a multirun's config: this uses its internal ``Hydra`` object
    (``GlobalHydra.instance().hydra``), ``Callbacks`` and ``BasicSweeper``, as ``Hydra.multirun``.
    """
    GlobalHydra.instance().clear()
    # a dry run names the run dirs the jobs would get, and makes none
    OmegaConf.register_new_resolver("unique_dir", lambda path, mode="RUN": path, replace=True)
    try:
        return _dry_run(overrides)
    finally:
        OmegaConf.register_new_resolver("unique_dir", unique_dir, replace=True, use_cache=True)


def _dry_run(overrides: Sequence[str]) -> str:
    """``dry_run``'s work, with the resolver that makes no dir."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3", job_name="train"):
        hydra = GlobalHydra.instance().hydra
        assert hydra is not None
        cfg = hydra.compose_config("train", list(overrides), run_mode=RunMode.MULTIRUN)
        # by name: Hydra's plugin scan imports the plugin modules again, as new class objects
        if cfg.hydra.launcher.get("_target_") not in SLURM_LAUNCHERS:
            choice = cfg.hydra.runtime.choices.get("hydra/launcher")
            raise UserError(f"hydra/launcher={choice} does not submit to SLURM: use slurm")
        batches, note = _job_batches(cfg)
        # resolve ${now:...} once, as BasicSweeper.sweep does: the jobs copy the resolved value
        sweep_dir = cfg.hydra.sweep.dir
        jobs = [
            _job(hydra.config_loader.load_sweep_config(cfg, job), job, num)
            for num, job in enumerate(job for batch in batches for job in batch)
        ]
        context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks())
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=context, task_function=_not_run, config=cfg
        )
    # the SLURM launcher (checked by name above: isinstance cannot tell), its parameters
    params: dict[str, Any] = launcher.params  # type: ignore[attr-defined]
    for job in jobs:
        _check_layout(job, params)
    executor = slurm_executor(launcher)
    command = shlex.join(["python", "train.py", "-m", *overrides])
    lines = [f"# dry run of: {command}", f"# sweep dir: {sweep_dir} (nothing is submitted)"]
    for batch_num, batch in enumerate(batches):
        lines += ["", f"# ---- sbatch script {batch_num + 1} of {len(batches)} ----"]
        lines.append(sbatch_script_text(executor, len(batch)))
    lines += _task_lines(params, executor, jobs, note)
    return "\n".join(lines)


def _not_run(cfg: DictConfig) -> None:
    """The task function the launcher is built with; a dry run never calls it."""
    raise AssertionError("a dry run runs no job")


def _job_batches(cfg: DictConfig) -> tuple[list[list[list[str]]], str]:
    """The override lists of the jobs, in launch batches, as ``BasicSweeper.sweep`` splits them.

    Other sweepers (Optuna) choose their jobs while they run: one batch of ``n_jobs`` jobs with
    the command line's overrides stands for them, with a note saying so.
    """
    # unresolved: an override's value may hold ${...}, for Hydra to resolve in the job
    task = cast(list[str], OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False))
    sweeper = cfg.hydra.sweeper
    if sweeper._target_ != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        n_jobs = OmegaConf.select(cfg, "hydra.sweeper.n_jobs", default=1) or 1
        note = f"# jobs: {sweeper._target_} chooses each job's overrides while it runs"
        return [[task] * n_jobs], note
    params = [f"{key}={value}" for key, value in (sweeper.params or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *task])
    return BasicSweeper.split_arguments(parsed, sweeper.max_batch_size), ""


def _job(cfg: DictConfig, overrides: list[str], num: int) -> Job:
    """One job's config checked as train.py checks it; its run dir and Lightning's node layout."""
    with open_dict(cfg):
        cfg.hydra.job.num = num  # what the launcher sets, so hydra.sweep.subdir resolves
        cfg.paths.output_dir = f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}"
    check(cfg)  # as train.py checks it
    trainer = cfg.get("trainer") or {}
    callbacks = cfg.get("callbacks") or {}
    job = Job(
        overrides=overrides,
        run_dir=f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}",
        num_nodes=trainer.get("num_nodes", 1),  # Lightning's default
        devices=trainer.get("devices", "auto"),
        requeue_callback=next(
            (str(k) for k, c in callbacks.items() if c and c.get("_target_") == REQUEUE_CALLBACK),
            None,
        ),
    )
    for key, what in (("num_nodes", "nodes"), ("devices", "GPUs (processes) per node")):
        value = getattr(job, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(
                f"trainer.{key}={value!r} cannot go to SLURM (job {_describe(job)}): it must be"
                f" the number of {what}, trainer.{key}=N"
            )
    return job


def _describe(job: Job) -> str:
    return " ".join(job.overrides) or "(no overrides)"


def _check_layout(job: Job, params: dict[str, Any]) -> None:
    """What Lightning's SLURMEnvironment checks at start-up, checked before the queue."""
    pairs = (("num_nodes", "nodes", "--nodes"), ("devices", "tasks_per_node", "--ntasks-per-node"))
    for key, launcher_key, flag in pairs:
        ours, theirs = getattr(job, key), params[launcher_key]
        if ours != theirs:
            raise UserError(
                f"trainer.{key}={ours} but hydra.launcher.{launcher_key}={theirs} (job"
                f" {_describe(job)}): Lightning needs SLURM's {flag} to equal {key}, and all jobs"
                f" of a sweep share one sbatch script; set trainer.{key}, the launcher follows it"
            )


def slurm_executor(launcher: SubmititSlurmLauncher) -> submitit.AutoExecutor:
    """The executor ``BaseSubmititLauncher.launch`` builds from ``hydra.launcher``.

    The same mapping as hydra-submitit-launcher 1.2's ``launch`` (which builds and submits in one
    method, so it cannot be reused): ``submitit_folder`` and ``max_num_timeout`` go to the
    constructor, the generic keys as they are, the others prefixed ``slurm_``.
    """
    params = dict(launcher.params)
    init = {
        "folder": params.pop("submitit_folder"),
        "slurm_max_num_timeout": params.pop("max_num_timeout"),
    }
    generic = set(OmegaConf.structured(BaseQueueConf).keys())
    update = {key if key in generic else f"slurm_{key}": value for key, value in params.items()}
    executor = slurm_executor_without_srun(lambda: submitit.AutoExecutor(cluster="slurm", **init))
    executor.update_parameters(**update)
    return executor


def _task_lines(
    params: dict[str, Any], executor: submitit.AutoExecutor, jobs: list[Job], note: str
) -> list[str]:
    """What runs where: the processes of each job, and each job's overrides and run dir."""
    nodes, per_node = params["nodes"], params["tasks_per_node"]
    ranks = nodes * per_node
    lines = [
        "",
        f"# ---- each job: {nodes} node(s) x {per_node} task(s) per node = {ranks} process(es),"
        f" DDP ranks 0-{ranks - 1} ----",
        f"# srun starts on every task: {submitit_command(executor)}",
        "# which runs its job (in an array: the one of its array index) as train.py runs these",
        "# overrides, in this run dir (shared by the job's ranks):",
    ]
    if note:
        lines.append(note)
    for num, job in enumerate(jobs):
        lines.append(f"#   job {num}: python train.py {shlex.join(job.overrides)}")
        lines.append(f"#          -> {job.run_dir}")
    lines += _preemption_lines(params, jobs)
    return lines


def _preemption_lines(params: dict[str, Any], jobs: list[Job]) -> list[str]:
    """What SLURM's signal before a preemption or the time limit does to each job."""
    delay, unhandled = params.get("signal_delay_s"), [j for j in jobs if not j.requeue_callback]
    head = f"\n# ---- preemption: SLURM signals USR2 {delay} s before a preemption or the time"
    if not delay:
        return ["", "# ---- preemption: no signal before the end (signal_delay_s=0) ----"]
    if unhandled:
        numbers = [jobs.index(job) for job in unhandled]
        return [
            f"{head} limit ----\n# jobs {numbers} have no {REQUEUE_CALLBACK} callback",
            "# (callbacks.slurm_requeue=null): submitit requeues them at once, mid-step, without a",
            "# checkpoint of that step",
        ]
    return [
        f"{head} limit ----\n# each job then stops after its training step, with a checkpoint,",
        "# and requeues itself to resume in its run dir",
        f"# (callbacks.{jobs[0].requeue_callback}: {REQUEUE_CALLBACK})",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m mnist_lit.cluster``; errors are one line and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(USAGE)
        return
    args = [a for a in args if a not in ("-m", "--multirun")]  # a submission is always a multirun
    with reported_errors():
        flags = [a for a in args if a.startswith("-")]
        if flags:
            raise UserError(
                f"unknown option {flags[0]}: pass Hydra overrides only (key=value, group=option)"
            )
        overrides = with_default_choices(args)
        with hydra_refusals("train", overrides):  # (an empty hydra.sweep.dir too)
            text = dry_run(overrides)  # composes and checks each job once
        print(text)


if __name__ == "__main__":
    main()
