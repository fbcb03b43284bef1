# The two commands of the README: `make run` (install, then start the app) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# CPU wheel of torch, installed before anything that depends on it: a looser spec pulls GBs of CUDA.
# On a GPU machine: make run TORCH=torch
TORCH ?= torch==2.13.0

.PHONY: run test install install-dev system-deps bench lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install "$(TORCH)"
	$(PIP) install -e ".[finetune]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e ".[dev,finetune]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(PY) app.py

# Debian packages: tesseract-ocr (OCR of scanned pages, optional for users) and chromium (browser
# tests). Root installs them; otherwise the tests that need them say why they skip.
SYSTEM_PACKAGES := tesseract-ocr chromium
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
		else echo "not installed:$$missing (the tests that need them will skip)"; fi; \
	fi

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.installed-dev system-deps lint
	$(PY) -m pytest -ra

bench: $(VENV)/.installed-dev
	$(PIP) install -q -e ".[dev,bench]"
	$(PY) bench/chat.py
	$(PY) bench/ingest.py
	$(PY) bench/retrieval.py
	$(PY) bench/serve.py
	$(PY) bench/finetune.py
