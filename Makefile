# mlp-sweep: `make sweep` runs the default study, `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Where torch comes from when no local wheel is found. Without an NVIDIA GPU: PyTorch's CPU-only
# index (a ~200 MB wheel instead of a multi-GB CUDA build). With one: PyPI's default CUDA build.
# Override for a specific CUDA: make sweep TORCH_INDEX=https://download.pytorch.org/whl/cu126
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
else
TORCH_INDEX ?= https://pypi.org/simple
endif
STUDY ?= sweep/configs/default.yaml
RESULTS ?= results
# Local runs keep every Ray process on 127.0.0.1 (see README, "Loopback").
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0

.PHONY: install install-test sweep test smoke lint bench mutation clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# A torch wheel already on this disk (pip's find-links) wins; otherwise the index chosen above.
	$(PY) -m pip install -q --no-index --no-deps torch==$(TORCH_VERSION) 2>/dev/null \
	  || $(PY) -m pip install -q --no-deps torch==$(TORCH_VERSION) --index-url $(TORCH_INDEX)
	$(PY) -m pip install -q -e .
	touch $@

# The tests cover the optional extras too (optuna-dashboard, MLflow).
$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,dashboard,mlflow]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# Runs the study (or finishes it, when RESULTS already holds it), then writes the report.
sweep: install
	$(PY) -m sweep run $(STUDY) --results $(RESULTS) --exist-ok
	$(PY) -m analysis report "$$($(PY) -m sweep dir $(STUDY) --results $(RESULTS))"

smoke: install
	$(MAKE) sweep STUDY=sweep/configs/smoke.yaml

test: install-test
	$(PY) -m pytest -q --durations=10 tests

lint: install-test
	$(VENV)/bin/ruff check model sweep analysis tests benchmarks

bench: install-test
	$(PY) benchmarks/train_loop.py
	$(PY) benchmarks/packing.py
	$(PY) benchmarks/sweep_vs_loop.py
	$(PY) benchmarks/analysis_scale.py
	$(PY) benchmarks/driver_scale.py

# Mutation testing of the core modules (minutes per module; prints the killed-mutant rate).
mutation: install-test
	$(PY) -m pip install -q -e '.[mutation]'
	$(PY) benchmarks/mutation.py

clean:
	rm -rf $(VENV) .pytest_cache
