"""The sweeps extra (``pip install -e '.[sweeps]'``): the sweep report (``report.py``), the
resumable Optuna search (``optuna_sweeper.py``, ``studies.py``) and the parallel launcher.
``hydra_plugins.mnist_lit_sweeper`` is what Hydra finds of it. docs/sweeps.md."""
