# Every target installs what it needs into .venv first: `make train` the core alone, `make test`
# everything (the `dev` extra), `make serve` the `serve` extra (pyproject.toml lists them).
# Pass Hydra overrides with ARGS, e.g. make train ARGS="model=mlp optimizer=sgd".
# Pass pytest options with PYTEST_ARGS, e.g. make test PYTEST_ARGS="-m 'not slow'".

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=
# the run of experiment=robust that make robust trains and make serve serves
ROBUST_RUN ?= logs/robust/run
# what make serve and make bench-serve serve: a run dir, a checkpoint, `last` or an .onnx file
CKPT ?= $(ROBUST_RUN)
# the runtime make serve serves and make bench-serve measures, so that the benchmark measures
# what is served: onnx (the checkpoint exported beside it, run by onnxruntime; the faster one in
# docs/serving.md) or checkpoint (torch)
RUNTIME ?= onnx

# where runs go: the config's paths.log_dir (conf/local/default.yaml may move it), asked of the
# config when a target needs it; LOG_DIR=... on the command line skips asking
LOG_DIR = $(shell $(PY) -c 'from mnist_lit.config import log_dir; print(log_dir())')
# the port of make serve, make tensorboard, make mlflow and make notebook (default: 8000, 6006,
# 5000 and 8888): PORT=8001 or port=8001
PORT ?=
port ?= $(PORT)

# what each extra's stamp file says is installed: core (the package alone), dev, serve, ...
CORE := $(VENV)/.installed-core
DEV := $(VENV)/.installed-dev

.PHONY: help install data train eval test test-unit bench lint format tensorboard mlflow notebook robust robustness serve bench-serve slurm-up slurm-down slurm-test slurm-status clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# .venv with the package and one extra (core: none); torch and torchvision are pinned in
# pyproject.toml (the only place). dev holds every extra, so it stands for the core too.
$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".$(if $(filter core,$*),,[$*])"
	touch $@ $(if $(filter dev,$*),$(CORE))

install: $(CORE)  ## create .venv with the core (pip install -e .); extras: pip install -e ".[serve]"

data: $(CORE)  ## fetch and verify MNIST into data/MNIST/raw
	$(PY) -m mnist_lit.data --data-dir data

train: data  ## train the default config (cnn, adam, one-cycle); overrides in ARGS
	$(PY) train.py $(ARGS)

eval: $(CORE)  ## test a checkpoint: make eval ARGS="ckpt_path=logs/train/runs/<time>/checkpoints/last.ckpt"
	$(PY) eval.py $(ARGS)

test: $(DEV) data  ## the whole test suite: tests/unit and tests/integration (real MNIST subsets)
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: $(DEV)  ## the fast layer alone (synthetic data, no MNIST, no subprocess)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: $(DEV) data  ## side by side with pytorch/examples and a plain loop, start-up, memory, beside busy processes (~18 min); logs/bench/<time>/bench.md
	$(PY) benchmarks/bench.py

robust: $(ROBUST_RUN)/metrics.json  ## the model make serve uses: experiment=robust, trained if missing (prints the time it takes here, then the time left)

# one thread: on 2 shared cores a step of this recipe took 0.31 s with 1 thread, 1.0 s with 2.
# callbacks.time_left prints the time the fit takes on this machine after its first 20 steps,
# then the time left every minute
$(ROBUST_RUN)/metrics.json: | data
	@if [ -d $(ROBUST_RUN) ]; then echo "[mnist-lit] $(ROBUST_RUN) has no metrics.json: resuming its training (experiment=robust) before serving"; \
	else echo "[mnist-lit] $(ROBUST_RUN) is missing: training the model make serve serves first (experiment=robust, 20 epochs, about 25 min with one thread on a 2-core machine); how long it takes here is printed after its first steps, then the time left every minute"; fi
	if [ -d $(ROBUST_RUN) ]; then OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) train.py resume=$(ROBUST_RUN); \
	else OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) train.py experiment=robust "callbacks=[default,time_left]" hydra.run.dir=$(ROBUST_RUN); fi

robustness: $(DEV) robust  ## accuracy on the generated non-MNIST check set: logs/robustness/<time>/robustness.md
	$(PY) benchmarks/robustness.py --model robust=$(ROBUST_RUN) $(ARGS)

serve: $(VENV)/.installed-serve $(if $(filter $(ROBUST_RUN),$(CKPT)),robust)  ## the model behind HTTP, a drawing page at http://127.0.0.1:8000/ (default: make robust's run by onnxruntime; CKPT=<run dir|ckpt|last|file.onnx>, RUNTIME=checkpoint, port=8001, ARGS="workers=1")
	$(PY) serve.py ckpt_path=$(CKPT) runtime=$(RUNTIME) export_missing=true $(if $(port),port=$(port)) $(ARGS)

bench-serve: $(DEV) $(if $(filter $(ROBUST_RUN),$(CKPT)),robust,data)  ## what make serve serves (CKPT, RUNTIME) under load, beside predict.py (~1 min); logs/bench/serve-<time>/serve_bench.md
	$(PY) benchmarks/serve_bench.py --ckpt $(CKPT) --runtime $(RUNTIME) $(ARGS)

lint: $(DEV)  ## ruff lint and format check; the import contracts (import-linter); mypy over src/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

format: $(DEV)  ## ruff: fix what can be fixed and format
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

tensorboard: $(CORE)  ## open TensorBoard on every run under paths.log_dir: http://localhost:6006 (PORT=, ARGS= more options)
	$(VENV)/bin/tensorboard --logdir $(LOG_DIR) --port $(or $(port),6006) $(ARGS)

mlflow: $(VENV)/.installed-trackers  ## open MLflow's UI on the runs of logger=mlflow (<paths.log_dir>/mlflow/mlflow.db): http://localhost:5000 (PORT=, ARGS=)
	mkdir -p $(LOG_DIR)/mlflow
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(LOG_DIR)/mlflow/mlflow.db --artifacts-destination $(LOG_DIR)/mlflow/artifacts --port $(or $(port),5000) --workers 1 $(ARGS)

notebook: $(VENV)/.installed-notebook  ## open notebooks/inspect_run.ipynb in Jupyter Lab: http://localhost:8888 (PORT=, ARGS=)
	$(VENV)/bin/jupyter lab notebooks/inspect_run.ipynb --port $(or $(port),8888) $(ARGS)

# the throwaway one-node SLURM cluster (as root; apt-get install -y slurm-wlm munge first): its
# config and state in $(MNIST_LIT_SLURM_DIR), default /tmp/mnist-lit-slurm; docs/clusters.md
SLURM_LOCAL := src/mnist_lit/cluster/local/slurm.sh

slurm-up:  ## start a one-node SLURM cluster here (root; then: export SLURM_CONF=/tmp/mnist-lit-slurm/slurm.conf)
	$(SLURM_LOCAL) up
	@$(SLURM_LOCAL) env

slurm-down:  ## stop it: cancel its jobs, stop slurmd, slurmctld and munged
	$(SLURM_LOCAL) down

slurm-test: $(DEV) data  ## the slurm tests (pytest -m slurm) on the cluster of make slurm-up (~3.5 min on 2 shared cores)
	SLURM_CONF=$${SLURM_CONF:-$$($(SLURM_LOCAL) env | cut -d= -f2)} $(PY) -m pytest -m slurm $(PYTEST_ARGS)

slurm-status:  ## whether the one-node cluster is up
	$(SLURM_LOCAL) status

clean:  ## remove logs (keeps data/ and .venv/)
	rm -rf logs
