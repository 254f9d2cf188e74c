# `make test` and `make demo` bootstrap their own environment (.venv) on first use and reuse it.
# On a machine without CUDA, torch's CPU build is installed first so that pip does not pull a
# multi-GB CUDA build; on a GPU machine (or in the NVIDIA container) the existing torch is kept.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CPU_TORCH := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test demo lint clean-venv

$(STAMP): setup.py
	@test -x "$(PY)" || $(PYTHON) -m venv "$(VENV)"
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "[bootstrap] CUDA device found: keeping pip's default torch"; \
	else \
		echo "[bootstrap] no CUDA device: installing $(CPU_TORCH) (CPU build)"; \
		"$(PY)" -m pip install --quiet "$(CPU_TORCH)"; \
	fi
	"$(PY)" -m pip install --quiet -e ".[test]"
	@touch "$(STAMP)"

install: $(STAMP)  ## the environment only (.venv), nothing run

test: $(STAMP)
	"$(PY)" -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	"$(PY)" -m megatron_prealign.demo

lint: $(STAMP)
	"$(PY)" -m pytest tests/test_lint.py

clean-venv:
	rm -rf "$(VENV)"
