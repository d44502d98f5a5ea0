"""Each private library API of compat.py still exists in the installed versions."""

from __future__ import annotations

import pickle

import lightning as L
import numpy as np
import pytest
import torch

from mnist_lit import compat


def test_hydra_argument_parser_knows_hydra_flags() -> None:
    args = compat.hydra_argument_parser().parse_args(["--cfg", "job", "model=mlp"])
    assert args.cfg == "job"
    assert args.overrides == ["model=mlp"]


def test_cpu_bf16_probe_answers() -> None:
    assert compat.cpu_has_native_bf16(torch.cpu) in (True, False)


def test_numpy_reconstructor_is_what_pickled_arrays_call() -> None:
    reconstruct = compat.numpy_array_reconstructor()
    assert reconstruct.__name__ == "_reconstruct"
    assert b"_reconstruct" in pickle.dumps(np.zeros(2))


def test_hydra_multirun_internals_exist() -> None:
    callbacks, basic_sweeper = compat.hydra_multirun_internals()
    assert callable(callbacks)
    assert hasattr(basic_sweeper, "split_arguments")


def test_submitit_renders_an_sbatch_script_without_slurm(tmp_path) -> None:
    import submitit

    executor = compat.slurm_executor_without_srun(
        lambda: submitit.AutoExecutor(cluster="slurm", folder=tmp_path)
    )
    executor.update_parameters(slurm_partition="gpu")
    script = compat.sbatch_script_text(executor, n_jobs=3)
    assert "#SBATCH --array=0-2" in script
    assert "#SBATCH --partition=gpu" in script
    assert "submitit" in compat.submitit_command(executor)


def test_wandb_reader_of_its_run_files_exists() -> None:
    """``compat.wandb_history_rows`` reads run files with W&B's internal DataStore (< 0.30)."""
    pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    assert callable(datastore.DataStore().open_for_scan)
    assert "history" in wandb_internal_pb2.Record.DESCRIPTOR.fields_by_name


class Note(L.Callback):
    """Notes its name in ``called`` when Lightning calls its ``on_before_backward``."""

    def __init__(self, name: str, called: list[str]) -> None:
        self.name, self.called = name, called

    def on_before_backward(self, trainer: L.Trainer, module: object, loss: object) -> None:
        self.called.append(self.name)


def call_on_before_backward(callbacks: list[L.Callback]) -> None:
    """Lightning's call of ``on_before_backward`` on ``callbacks``, in a bare trainer."""
    trainer = L.Trainer(
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    compat.call_callback_hook(trainer, "on_before_backward", torch.tensor(1.0))


def test_lightning_calls_a_hook_on_every_callback_through_one_function() -> None:
    called: list[str] = []
    call_on_before_backward([Note("a", called), Note("b", called)])
    assert called == ["a", "b"]


def test_lightning_passes_over_a_callback_hook_that_is_not_callable() -> None:
    called: list[str] = []
    skipped, kept = Note("skipped", called), Note("kept", called)
    compat.skip_callback_hook(skipped, "on_before_backward")
    call_on_before_backward([skipped, kept])
    assert called == ["kept"]
