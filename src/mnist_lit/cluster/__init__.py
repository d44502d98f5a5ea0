"""The cluster extra (``pip install -e '.[cluster]'``): SLURM through Hydra's submitit launcher
(``hydra/launcher=slurm``), its dry run (``python -m mnist_lit.cluster``) and preemption
(``slurm.RequeueOnPreemption``). docs/clusters.md."""
