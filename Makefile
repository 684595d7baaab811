# Two entry points: `make demo` (the whole study on built-in phantom data) and `make test`.
# Each creates .venv and installs what it needs. Override TORCH to pick another build, e.g.
#   make demo TORCH="torch==2.5.1" PIP_EXTRA="--index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PIP_EXTRA ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= demo-output

.PHONY: demo test lint install clean gpu-wheels

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, on its own: installed alone, a range in pyproject.toml then installs nothing more.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install $(PIP_EXTRA) "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lowdose study --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# Wheels of the dependencies a lent GPU machine's image lacks (Python 3.12, no network there),
# for benchmarks/gpu_check.sh; the versions are the ones this venv runs.
GPU_WHEELS := monai pydicom nibabel bm3d bm4d PyWavelets
gpu-wheels: $(STAMP)
	$(BIN)/pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
	  $$($(BIN)/pip list --format=freeze | grep -iE '^($(subst $() ,|,$(GPU_WHEELS)))==')

clean:
	rm -rf $(VENV) $(DEMO_OUT)
