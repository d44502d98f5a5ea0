"""The Hydra side of the cluster extra: ``hydra/launcher=slurm``'s launcher. Hydra imports this at
every start (plugin discovery) and accepts launchers from the ``hydra_plugins`` package only, so
it is here; without the cluster extra (hydra-submitit-launcher) it defines nothing.

- ``SlurmLauncher``: Hydra's submitit SLURM launcher; a submission that ``sbatch`` refuses is one
  line naming the refused option and the key to change (``mnist_lit.cluster.launcher``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from hydra.core.utils import JobReturn

if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as SubmititSlurmLauncher,
    )

    class SlurmLauncher(SubmititSlurmLauncher):
        """Submits as submitit's launcher does; a refused submission is a ``UserError``."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            try:
                return super().launch(job_overrides, initial_job_idx)
            except Exception as err:
                from mnist_lit.cluster.launcher import submission_error

                error = submission_error(err)
                if error is None:
                    raise
                raise error from None
