# Two commands set everything up on a fresh clone: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Real MNIST for the tests; CI and our machines keep it beside the checkout.
export RNNSERVE_DATA_DIR ?= $(abspath ../shared/data)
# Torch's OpenMP threads spin-wait by default, which starves everything else on a shared machine.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help install install-dev serve loadtest bench soak load-tools browser-tools test lint typecheck train-digit train-forecast clean check-containers container-tools rehearsal

help:
	@echo "make serve           run the service on the committed models (127.0.0.1:8000)"
	@echo "make test            lint, type-check and run the whole test suite"
	@echo "make loadtest        latency and throughput of the service at concurrency 1 and 64"
	@echo "make bench           the full benchmark (hey, every input form, 1 vs N workers, baselines) into reports/bench/"
	@echo "make soak            15 minutes at 70 % of capacity: errors, p99, memory, descriptors into reports/soak/"
	@echo "make train-digit     train and export the digit LSTM into models/"
	@echo "make train-forecast  train and export the series GRU into models/"
	@echo "make check-containers  build, run and stop the CPU images for real (Docker engine started if needed)"
	@echo "make rehearsal       2 replicas behind haproxy: rolling restart, SIGKILL, 1 vs 2 replicas (~1 min)"

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

# The README's soak run; `make test` runs a one-minute version (tests/process/test_soak.py).
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

# The container images, built and run for real (tests/system/test_container.py with scripts/containers.py): hadolint
# and docker-compose config, then the CPU image built, served with `docker-compose --profile cpu up`,
# checked and stopped, and the train-cpu image built and run for a dry run. A Docker engine is started for
# the run when none answers, and a stand-in base image made once when no registry answers. Part of
# `make test` as well.
check-containers: container-tools $(VENV)/.dev-installed
	$(PY) -m pytest -ra -s tests/system/test_container.py

# The cluster rehearsed on one machine: two replicas behind haproxy under load, a rolling restart, a
# SIGKILL, and 1 against 2 replicas (tests/system/test_rehearsal.py, about a minute). Part of `make test` as well.
rehearsal: container-tools load-tools $(VENV)/.dev-installed
	$(PY) -m pytest -ra -s tests/system/test_rehearsal.py

# Debian's Chromium, which the browser tests drive through Playwright (no browser is downloaded).
browser-tools:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" != 0 ]; then echo "chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi; \
	  echo "installing Debian's chromium (the browser tests drive it)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Debian's Docker engine and Compose, debootstrap (the stand-in base image) and haproxy (the rehearsal).
CONTAINER_PACKAGES := docker.io docker-compose debootstrap haproxy
container-tools:
	@missing="$$(for package in $(CONTAINER_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q 'ok installed' || echo $$package; done)"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing: sudo apt-get install" $$missing >&2; exit 1; fi; \
	  echo "installing Debian's" $$missing "(the container checks and the cluster rehearsal)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

train-digit: $(VENV)/.dev-installed
	$(PY) -m training.digit --data-dir $(RNNSERVE_DATA_DIR) --out models

train-forecast: $(VENV)/.dev-installed
	$(PY) -m training.forecast --out models

clean:
	rm -rf $(VENV) reports .pytest_cache .mypy_cache .ruff_cache
