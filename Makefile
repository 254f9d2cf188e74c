# `make test` and `make demo` bootstrap their own environment (.venv) on first use and reuse it.
# On a machine without CUDA, torch's CPU build is installed first so that pip does not pull a
# multi-GB CUDA build; on a GPU machine (or in the NVIDIA container) the existing torch is kept.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CPU_TORCH := torch==2.13.0
PYTEST_ARGS ?=

DEBIAN_TEXT_PACKAGES := manpages manpages-de debian-reference-en debian-reference-de fortunes-de trans-de-en

.PHONY: install test demo demo-real debian-text lint clean-venv

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

# The real-language demo's text (man pages, Debian Reference, fortunes, Ding dictionary): installed
# with apt-get when missing (as root), otherwise a message saying what to install.
debian-text: $(STAMP)
	@if ! "$(PY)" -c "from megatron_prealign.data.debian_text import check_installed; check_installed()" 2>/dev/null; then \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			echo "[debian-text] installing $(DEBIAN_TEXT_PACKAGES)"; \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(DEBIAN_TEXT_PACKAGES); \
		else \
			echo "[debian-text] the real-language demo needs the Debian packages $(DEBIAN_TEXT_PACKAGES);" \
				"apt-get is not available here or this is not root: install them with" \
				"'sudo apt-get install -y $(DEBIAN_TEXT_PACKAGES)' on a Debian/Ubuntu machine"; \
			exit 2; \
		fi; \
	fi

demo-real: debian-text
	"$(PY)" -m megatron_prealign.demo --only real --seeds 1234 1

lint: $(STAMP)
	"$(PY)" -m pytest tests/test_lint.py

clean-venv:
	rm -rf "$(VENV)"
