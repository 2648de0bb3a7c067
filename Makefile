# HRM ablation platform. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BIN ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
# CPU build by default; e.g. TORCH="torch==2.13.0 --index-url ..." for another build.
TORCH      ?= torch==2.13.0
EXTRAS     ?= track,sweep,report,server,dev
STAMP      := $(VENV)/.installed
PYTEST_ARGS ?=

$(PY):
	$(PYTHON_BIN) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-install when the project's requirements change.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	@touch $(STAMP)

.PHONY: help install test test-fast test-gpu lint train-demo summary benchmark-throughput benchmark-reference benchmark-learning clean \
	sweep-gate-bias sweep-gate-hidden-ratio sweep-feudal-weight sweep-manager-period sweep-halt-steps \
	sweep-curriculum ablate-gating sweep-list sweep-prune mlflow-ui report optuna-dashboard benchmark-gpu calibrate-scale \
	benchmark-small-trials

SCALE ?= cpu
# Overrides of every sweep target, over the sweep file and its scale (README "Sweeps"): sweep keys and
# training keys for every trial, e.g. SWEEP_ARGS="seeds=[0,1,2] max_concurrent=1 max_steps=800".
SWEEP_ARGS ?=

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-24s\033[0m %s\n", $$1, $$2}'

install: $(STAMP) ## Create .venv and install the project (pinned CPU torch first)

test: $(STAMP) ## Run the whole test suite (unit + end-to-end), as CI does
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## Unit tests only (skips tests marked slow)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-gpu: $(STAMP) ## GPU parity tests (fused AdamATan2, flash-attn); skipped without a GPU
	$(PY) -m pytest -m gpu -rs $(PYTEST_ARGS)

lint: $(STAMP) ## ruff
	$(PY) -m ruff check .

train-demo: $(STAMP) ## Train the tiny HRM on 4x4 Sudoku on the CPU (~2 min)
	$(PY) -m hrm_core.pretrain arch=hrm_tiny data=sudoku4 global_batch_size=64 lr=1e-3 lr_warmup_steps=20 epochs=60 eval_interval=10 threads=2

summary: $(STAMP) ## Parameter counts and FLOPs of the reference model (hrm_v1)
	$(PY) -m hrm_core.summary

benchmark-throughput: $(STAMP) ## s/step, samples/s and GFLOP/s, fp32/bf16 x eager/compile
	$(PY) benchmarks/train_throughput.py

benchmark-reference: $(STAMP) ## The reference HRM's own train step beside ours; REF=path/to/its/checkout
	@test -n "$(REF)" || { echo "error: REF is not set: make benchmark-reference REF=path/to/a/checkout/of/sapientinc/HRM" >&2; exit 2; }
	$(PY) benchmarks/reference_throughput.py --reference-dir "$(REF)"

benchmark-learning: $(STAMP) ## Held-out exact accuracy over 150 s on 4x4 Sudoku
	$(PY) benchmarks/learning_sudoku4.py

benchmark-small-trials: $(STAMP) ## The same small cpu-scale sweep on BASE (default 93409eb) and on this tree, side by side
	$(PY) benchmarks/small_trials.py $(if $(BASE),--base $(BASE))

benchmark-gpu: $(STAMP) ## hrm_v1 on one CUDA GPU: s/step, MFU, each kernel's gain, largest batch, shared GPU (< 5 min)
	$(PY) benchmarks/gpu.py

calibrate-scale: $(STAMP) ## Is a sweep's scale informative? make calibrate-scale SWEEP=feudal_weight [SCALE=cpu]
	@test -n "$(SWEEP)" || { echo "usage: make calibrate-scale SWEEP=<sweep name> [SCALE=cpu]" >&2; exit 2; }
	$(PY) benchmarks/calibrate_scale.py $(SWEEP) --scale $(SCALE) $(SWEEP_ARGS)

sweep-gate-bias: $(STAMP) ## Search the gate init bias (Optuna TPE + ASHA); SCALE=smoke|cpu|gpu
	$(PY) -m sweeps run gate_bias --scale $(SCALE) $(SWEEP_ARGS)

sweep-gate-hidden-ratio: $(STAMP) ## Search the gate MLP width (Optuna TPE + ASHA)
	$(PY) -m sweeps run gate_hidden_ratio --scale $(SCALE) $(SWEEP_ARGS)

sweep-feudal-weight: $(STAMP) ## Ablation: feudal loss weights vs head off vs weight 0, paired seeds
	$(PY) -m sweeps run feudal_weight --scale $(SCALE) $(SWEEP_ARGS)

sweep-manager-period: $(STAMP) ## Search the feudal manager period and weight
	$(PY) -m sweeps run manager_period --scale $(SCALE) $(SWEEP_ARGS)

sweep-halt-steps: $(STAMP) ## Two-objective search: accuracy vs ACT steps
	$(PY) -m sweeps run halt_steps --scale $(SCALE) $(SWEEP_ARGS)

sweep-curriculum: $(STAMP) ## Ablation: progressive ACT budget vs flat, equal total steps
	$(PY) -m sweeps run curriculum --scale $(SCALE) $(SWEEP_ARGS)

ablate-gating: $(STAMP) ## Gated vs ungated x seeds, plus gate-bias arms, then the report
	$(PY) sweeps/ablate_gating.py --scale $(SCALE) $(SWEEP_ARGS)

SWEEP ?=
REPORT_SEEDS = $(if $(MIN_SEEDS),--min-seeds $(MIN_SEEDS)) $(if $(MAX_SEEDS),--max-seeds $(MAX_SEEDS))
report: $(STAMP) ## Report of a sweep from MLflow: make report SWEEP=feudal_weight [MIN_SEEDS=3 MAX_SEEDS=10]
	@if [ -n "$(PARENT)" ]; then $(PY) -m analysis.report --parent-run $(PARENT) $(REPORT_SEEDS); \
	elif [ -n "$(SWEEP)" ]; then $(PY) -m analysis.report $(SWEEP) $(REPORT_SEEDS); \
	else echo "usage: make report SWEEP=<sweep name> | PARENT=<parent run id>"; exit 2; fi

sweep-list: $(STAMP) ## Sweeps and their invocations with status and disk footprint
	$(PY) -m sweeps list

KEEP ?= none
sweep-prune: $(STAMP) ## Free a finished invocation's checkpoints: make sweep-prune SWEEP=<name> [KEEP=none|last|best]
	@test -n "$(SWEEP)" || { echo "usage: make sweep-prune SWEEP=<sweep name> [KEEP=none|last|best]" >&2; exit 2; }
	$(PY) -m sweeps prune $(SWEEP) --keep $(KEEP)

MLFLOW_PORT ?= 5000
mlflow-ui: $(STAMP) ## MLflow UI on the embedded store (or MLFLOW_TRACKING_URI), http://127.0.0.1:$(MLFLOW_PORT)
	$(PY) -m mlflow ui --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlruns/mlflow.db}" \
		--default-artifact-root "$(CURDIR)/mlruns/artifacts" --host 127.0.0.1 --port $(MLFLOW_PORT)

OPTUNA_PORT ?= 8080
optuna-dashboard: $(STAMP) ## Optuna dashboard of the latest search (SWEEP=<name>: its latest), http://127.0.0.1:$(OPTUNA_PORT)
	$(PY) -m analysis.dashboard $(SWEEP) --port $(OPTUNA_PORT)

clean: ## Remove caches (keeps .venv, data and results)
	rm -rf .pytest_cache .ruff_cache **/__pycache__
