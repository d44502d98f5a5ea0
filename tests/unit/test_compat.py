"""Each private library API of compat.py still exists in the installed versions."""

from __future__ import annotations

import pytest

from mnist_lit import compat


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
