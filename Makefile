# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates (or refreshes) the local virtual environment .venv by itself.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# torch first, from the local CPU wheel, so that nothing resolves a CUDA build.
	$(VENV)/bin/pip install --quiet -c constraints.txt torch
	$(VENV)/bin/pip install --quiet -c constraints.txt -e '.[test]'
	# The ImageNet-C reference: a test oracle and the frost textures; its pins are stale.
	$(VENV)/bin/pip install --quiet --no-deps imagecorruptions
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/maelens demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check maelens tests bench
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(VENV)/bin/python bench/bench_capture.py
