# Two commands set everything up on a fresh clone: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Real MNIST for the tests; CI and our machines keep it beside the checkout.
export RNNSERVE_DATA_DIR ?= $(abspath ../shared/data)
# Torch's OpenMP threads spin-wait by default, which starves everything else on a shared machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help install install-dev serve loadtest bench soak load-tools browser-tools test lint typecheck train-digit train-forecast clean check-containers container-tools

help:
	@echo "make serve           run the service on the committed models (127.0.0.1:8000)"
	@echo "make test            lint, type-check and run the whole test suite"
	@echo "make loadtest        latency and throughput of the service at concurrency 1 and 64"
	@echo "make bench           the full benchmark (hey, every input form, 1 vs N workers, baselines) into reports/bench/"
	@echo "make soak            15 minutes at 70 % of capacity: errors, p99, memory, descriptors into reports/soak/"
	@echo "make train-digit     train and export the digit LSTM into models/"
	@echo "make train-forecast  train and export the series GRU into models/"
	@echo "make check-containers  hadolint, docker-compose config for every profile, and the build-context test"

$(VENV)/.serve-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml client/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,train,dev]' -e ./client
	touch $(VENV)/.serve-installed $@

$(VENV)/.bench-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[cpu,bench]'
	touch $(VENV)/.serve-installed $@

install: $(VENV)/.serve-installed
install-dev: $(VENV)/.dev-installed

serve: $(VENV)/.serve-installed
	$(PY) -m service

# Latency and throughput at concurrency 1 and 64 (README, Performance); starts its own server.
loadtest: $(VENV)/.dev-installed
	$(PY) scripts/loadtest.py --serve

# Not part of `make test`: it takes minutes, and its numbers belong in the README, not in asserts.
bench: load-tools $(VENV)/.bench-installed
	$(PY) scripts/bench.py --out reports/bench $(BENCH_ARGS)

# The README's soak run; `make test` runs a one-minute version (tests/test_soak.py).
soak: load-tools $(VENV)/.serve-installed
	$(PY) scripts/soak.py --seconds 900 --out reports/soak/soak.md

# Debian's `hey`, the load generator of the benchmark, the soak and their tests.
load-tools:
	@command -v hey >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "hey is missing: sudo apt-get install hey" >&2; exit 1; fi; \
	  echo "installing Debian's hey (the load generator)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey >/dev/null; }

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check service training tests scripts client
	$(PY) -m ruff format --check service training tests scripts client

typecheck: $(VENV)/.dev-installed
	$(PY) -m mypy

test: lint typecheck container-tools load-tools browser-tools
	$(PY) -m pytest -ra

# The container images, checked without a Docker engine (none runs here or in CI): tests/test_container.py
# runs hadolint (dev extra), validates docker-compose.yml for every profile with Debian's docker-compose,
# and installs and serves the .dockerignore-filtered build context. Part of `make test` as well.
check-containers: container-tools $(VENV)/.dev-installed
	$(PY) -m pytest -ra tests/test_container.py

# Debian's Chromium, which the browser tests drive through Playwright (no browser is downloaded).
browser-tools:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi; \
	  echo "installing Debian's chromium (the browser tests drive it)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

container-tools:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "docker-compose is missing: sudo apt-get install docker-compose" >&2; exit 1; fi; \
	  echo "installing Debian's docker-compose (it validates compose files without a Docker engine)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null; }

train-digit: $(VENV)/.dev-installed
	$(PY) -m training.digit --data-dir $(RNNSERVE_DATA_DIR) --out models

train-forecast: $(VENV)/.dev-installed
	$(PY) -m training.forecast --out models

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache
