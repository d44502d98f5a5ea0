"""``python -m mnist_lit.cluster [overrides]``: print the SLURM job a sweep would submit."""

from mnist_lit.cluster.dry_run import main

if __name__ == "__main__":
    main()
