# Two commands set everything up on a fresh clone: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Real MNIST for the tests; CI and our machines keep it beside the checkout.
export RNNSERVE_DATA_DIR ?= $(abspath ../shared/data)
# Torch's OpenMP threads spin-wait by default, which starves everything else on a shared machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help install install-dev serve test lint typecheck train-digit train-forecast clean

help:
	@echo "make serve           run the service on the committed models (127.0.0.1:8000)"
	@echo "make test            lint, type-check and run the whole test suite"
	@echo "make train-digit     train and export the digit LSTM into models/"
	@echo "make train-forecast  train and export the series GRU into models/"

$(VENV)/.serve-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,train,dev]'
	touch $(VENV)/.serve-installed $@

install: $(VENV)/.serve-installed
install-dev: $(VENV)/.dev-installed

serve: $(VENV)/.serve-installed
	$(PY) -m service

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check service training tests
	$(PY) -m ruff format --check service training tests

typecheck: $(VENV)/.dev-installed
	$(PY) -m mypy

test: lint typecheck
	$(PY) -m pytest -ra

train-digit: $(VENV)/.dev-installed
	$(PY) -m training.digit --data-dir $(RNNSERVE_DATA_DIR) --out models

train-forecast: $(VENV)/.dev-installed
	$(PY) -m training.forecast --out models

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache
