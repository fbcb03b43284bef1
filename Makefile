# The two commands of the README: `make run` (install, then start the app) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
# CPU wheel of torch, installed before anything that depends on it: a looser spec pulls GBs of CUDA.
# On a GPU machine: make run TORCH=torch
TORCH ?= torch==2.13.0

.PHONY: run test install install-dev browser bench lint

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install "$(TORCH)"
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(PY) app.py

# Debian's chromium for the browser tests (root installs it; otherwise those tests say why they skip).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium is not installed: browser tests will skip"

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(VENV)/.installed-dev browser lint
	$(PY) -m pytest -ra

bench: $(VENV)/.installed-dev
	$(PY) bench/chat.py
