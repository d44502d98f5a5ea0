"""``python -m mnist_lit.cluster [overrides]``: print the SLURM job a sweep would submit."""

from mnist_lit.errors import reported_errors, require_extra

if __name__ == "__main__":
    with reported_errors():  # without the extra: one line that names it
        require_extra("cluster", "submitit", "hydra_plugins.hydra_submitit_launcher")
    from mnist_lit.cluster.dry_run import main

    main()
