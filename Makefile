# `make test` and `make demo` bootstrap their own environment (.venv) on first use and reuse it.
# The venv's Python (>= 3.12, megatron-core 0.19 needs it) is found by tools/find_python.sh:
# PYTHON=... when given, else PATH, else pyenv's installed versions. On a machine without CUDA the
# tested torch is installed first (PyPI's torch for Python 3.12 is its CUDA build, which runs on
# the CPU); on a GPU machine (or in the NVIDIA container) the existing torch is kept.

PYTHON ?=
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TESTED_TORCH := torch==2.13.0
PYTEST_ARGS ?=

DEBIAN_TEXT_PACKAGES := manpages manpages-de debian-reference-en debian-reference-de fortunes-de trans-de-en

.PHONY: install test demo demo-xllama-full demo-real debian-text lint clean-venv

$(STAMP): setup.py tools/find_python.sh
	@if [ -x "$(PY)" ] && ! "$(PY)" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then \
		echo "[bootstrap] $(VENV) was made with Python < 3.12: making it again"; \
		rm -rf "$(VENV)"; \
	fi
	@if [ ! -x "$(PY)" ]; then \
		python="$$(PYTHON='$(PYTHON)' bash tools/find_python.sh)" || exit 2; \
		echo "[bootstrap] creating $(VENV) with $$python ($$("$$python" -V 2>&1))"; \
		"$$python" -m venv "$(VENV)"; \
	fi
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "[bootstrap] CUDA device found: keeping pip's default torch"; \
	else \
		echo "[bootstrap] no CUDA device: installing the tested $(TESTED_TORCH) (runs on the CPU)"; \
		"$(PY)" -m pip install --quiet "$(TESTED_TORCH)"; \
	fi
	"$(PY)" -m pip install --quiet -e ".[test]"
	@touch "$(STAMP)"

install: $(STAMP)  ## the environment only (.venv), nothing run

test: $(STAMP)
	"$(PY)" -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	"$(PY)" -m megatron_prealign.demo

# The x-LLaMA miniature's full configuration (docs/xllama.md): one run per seed (one thread, ~30 min
# each on a quiet core, 46 min with three side by side on 2 cores), then the report with intervals and paired tests; records and plots copied to docs/xllama/.
XLLAMA_FULL_SEEDS ?= 1234 1 2
demo-xllama-full: $(STAMP)
	@for s in $(XLLAMA_FULL_SEEDS); do \
		OMP_NUM_THREADS=1 "$(PY)" -m megatron_prealign.demo --only xllama --full --seed $$s \
			--output-dir results/xllama_full_s$$s || exit 1; \
	done
	"$(PY)" -m megatron_prealign.demo.xllama_report \
		--inputs $(foreach s,$(XLLAMA_FULL_SEEDS),results/xllama_full_s$(s)) \
		--output docs/xllama/full_report.md --json docs/xllama/full_summary.json \
		--publish docs/xllama --prefix full

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
