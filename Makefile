# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

DEMO_DATA ?= data/demo
DEMO_LOGS ?= logs
DEMO_NAME ?= demo
DEMO_SELECTION ?= dissect-mome
DEMO_EPOCHS ?= 5
DEMO_RATIO ?= 0.5
DEMO_FLAGS ?= --model dissect-vit-tiny --precision fp32 --batch-size 128 --lr 1e-3 --wd 0.1 \
	--warmup 50 --workers 1 --seed 0 --log-every-n-steps 50

.PHONY: venv demo demo-data test test-fast lint slurm-test gpu-check bench patch patch-check clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,eval]'
	touch $@

$(DEMO_DATA)/manifest.json: | $(STAMP)
	$(VENV)/bin/open-clip-dissect make-data --out $(DEMO_DATA) --train-size 20000 --val-size 1000 \
		--noise-rate 0.4 --noise-kind shuffle --seed 0

demo-data: $(DEMO_DATA)/manifest.json

demo: $(STAMP) $(DEMO_DATA)/manifest.json
	rm -rf $(DEMO_LOGS)/$(DEMO_NAME)
	$(PY) -m open_clip_dissect.main $(DEMO_FLAGS) --epochs $(DEMO_EPOCHS) \
		--train-data '$(DEMO_DATA)/train/{00000..00019}.tar' --val-data '$(DEMO_DATA)/val/00000.tar' \
		--dataset-type webdataset --selection $(DEMO_SELECTION) --ratio $(DEMO_RATIO) \
		--logs $(DEMO_LOGS) --name $(DEMO_NAME) --selection-record $(DEMO_LOGS)/$(DEMO_NAME)/selection-record
	$(VENV)/bin/open-clip-dissect summary $(DEMO_LOGS)/$(DEMO_NAME)

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

# The quick loop: every test not marked slow (core, distributed, offline, the adapter's flags,
# data and docs), the same set as `pytest -m "not slow"`. Times: CONTRIBUTING.md.
test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" tests

# ruff (pyproject.toml): lint errors and formatting; `ruff format src tests scripts` fixes the latter.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

# The sbatch script under a real one-node SLURM on localhost: requeue, resubmission, truncated
# checkpoint (~5 min; root: installs Debian's slurm-wlm and munge when missing).
slurm-test: $(STAMP)
	PY=$(abspath $(PY)) scripts/slurm/test/run.sh

# Everything that needs a GPU, one verdict per line, within 8 minutes (docs/gpu-check.md); without
# CUDA one line says so and the exit status is 5.
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py

# make bench [PROFILE=quick|smoke|full]: writes bench/results/<profile>/ and prints the table;
# the seeded profiles (paper, web, real) write where their committed reports and caches live.
# BENCH_OUT=DIR writes elsewhere.
PROFILE ?= quick
BENCH_OUT ?=
bench: $(STAMP)
	$(PY) scripts/bench.py --profile $(PROFILE)$(if $(BENCH_OUT), --out $(BENCH_OUT))

# The patch for forks of open_clip_train (patches/): regenerate it, or check that it is current,
# applies to the pinned release and trains through the patched module.
patch: $(STAMP)
	PY=$(PY) scripts/make_patch.sh

patch-check: $(STAMP)
	PY=$(PY) scripts/patch_check.sh

clean:
	rm -rf $(VENV) logs data .pytest_cache
