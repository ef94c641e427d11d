# Two commands set everything up on a fresh clone: `make serve` and `make test`. `make help` lists the rest.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Real MNIST for the tests, kept beside the checkout (../shared/data), as CI keeps it.
export RNNSERVE_DATA_DIR ?= $(abspath ../shared/data)
# Torch's OpenMP threads spin-wait by default, which starves everything else on a shared machine.
export OMP_WAIT_POLICY ?= PASSIVE

# pytest exits 5 when it selected no test: a tier that runs nothing is an error, said in one line.
define pytest
$(PY) -m pytest -ra $(1) || { status=$$?; [ $$status != 5 ] || \
  echo "pytest selected no test ($(or $(1),tests)): its folder is empty, or -m or -k match nothing" >&2; \
  exit $$status; }
endef

.PHONY: help tiers mnist install install-dev serve loadtest bench bench-gpu soak docs train-digit train-forecast train-series \
  lint typecheck test test-fast test-unit test-app test-process test-system check-containers rehearsal \
  load-tools browser-tools container-tools system-tools clean

help: ## this list
	@awk 'BEGIN { FS = ":[^#]*## " } /^##@ / { printf "\n%s\n", substr($$0, 5) } \
	  /^[a-z-]+:.*## / { printf "  make %-17s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@echo
	@echo "Needs root: the *-tools targets install Debian packages as root, and without root name what is missing."

##@ Running (each installs what it needs into .venv first)
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

install: $(VENV)/.serve-installed ## the service and ONNX Runtime into .venv
install-dev: $(VENV)/.dev-installed ## the service, training, tests, lint and docs tools into .venv

serve: $(VENV)/.serve-installed ## run the service on the committed models (127.0.0.1:8000)
	$(PY) -m service

# Starts its own server.
loadtest: $(VENV)/.dev-installed ## latency and throughput at concurrency 1 and 64 (~1 min)
	$(PY) scripts/loadtest.py --serve

# Not part of `make test`: it takes long, and its numbers belong in the README, not in asserts.
bench: load-tools $(VENV)/.bench-installed ## the full benchmark into reports/bench/ (hey; ~40 min, long)
	$(PY) scripts/bench.py --out reports/bench $(BENCH_ARGS)

# On a GPU host: onnxruntime-gpu (the gpu extra, in place of onnxruntime: one module, never both) and
# torch for the TorchScript backend. `BENCH_ARGS=--dry-run` runs the same cells on the CPU in about a minute.
bench-gpu: load-tools $(VENV)/.bench-gpu-installed ## the GPU benchmark into reports/bench-gpu/ (ORT and TorchScript on CUDA)
	$(PY) scripts/bench.py --gpu --out reports/bench-gpu $(BENCH_ARGS)

$(VENV)/.bench-gpu-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip uninstall -q -y onnxruntime
	$(PY) -m pip install -q -e '.[gpu,bench,torchscript]'
	touch $@

# The README's soak run; `make test` runs a one-minute version (tests/process/test_soak.py).
soak: load-tools $(VENV)/.serve-installed ## 15 min at 70 % of capacity into reports/soak/ (hey; long)
	$(PY) scripts/soak.py --seconds 900 --out reports/soak/soak.md

docs: $(VENV)/.dev-installed ## build the documentation site into site/ (MkDocs, strict)
	$(PY) -m mkdocs build --strict --site-dir site

train-digit: $(VENV)/.dev-installed ## train and export the digit LSTM into models/ (torch; long)
	$(PY) -m training.digit --data-dir $(RNNSERVE_DATA_DIR) --out models

train-forecast: $(VENV)/.dev-installed ## train and export sine_gru, the sine-family forecaster, into models/ (torch; long)
	$(PY) -m training.forecast --out models

train-series: $(VENV)/.dev-installed ## train and export series_gru, the default forecaster, into models/ (torch; minutes)
	$(PY) -m training.series_train --out models

clean: ## remove .venv, reports/, site/ and the tools' caches
	rm -rf $(VENV) reports site .pytest_cache .mypy_cache .ruff_cache

##@ Testing: four tiers under tests/, sorted by what they need (`pytest -m unit` selects one too)
tiers: ## what each test tier needs, and about how long it takes on 2 cores
	@echo "Test tiers (make test-TIER runs one; times on 2 cores, roughly):"
	@echo "  unit     pure functions: the venv and real MNIST in $(RNNSERVE_DATA_DIR) (~30 s, and ~30 s of"
	@echo "           training dry runs that make test-fast leaves out)"
	@echo "  app      the real app in-process over ASGI: the same (~50 s)"
	@echo "  process  real uvicorn processes: free ports on 127.0.0.1, hey (~5 min, a one-minute soak included)"
	@echo "  system   Docker engine, docker-compose, debootstrap, haproxy, Chromium, kubectl: root installs the"
	@echo "           Debian ones, otherwise they must be there already (~10 min; the first image build longer)"
	@echo "  make test-fast runs unit and app only (under 2 min), and needs neither root nor any of those tools."

mnist: ## check that real MNIST is where the tests look (RNNSERVE_DATA_DIR)
	$(if $(wildcard $(RNNSERVE_DATA_DIR)/MNIST/raw/t10k-images-idx3-ubyte*),@true,$(error real MNIST \
	  is missing at $(RNNSERVE_DATA_DIR)/MNIST/raw: set RNNSERVE_DATA_DIR to the folder that holds MNIST/raw))

lint: $(VENV)/.dev-installed ## ruff check and ruff format --check
	$(PY) -m ruff check service training tests scripts client
	$(PY) -m ruff format --check service training tests scripts client

typecheck: $(VENV)/.dev-installed ## mypy
	$(PY) -m mypy

test: tiers mnist system-tools lint typecheck ## lint, type-check and all four tiers, as CI runs it (root or the tools; ~20 min, long)
	@$(call pytest,)

test-fast: mnist lint ## lint, then the unit and app tiers without the slow tests (under 2 min)
	@$(call pytest,-m "not slow" tests/unit tests/app)

test-unit: mnist $(VENV)/.dev-installed ## the unit tier: pure functions
	@$(call pytest,tests/unit)

test-app: mnist $(VENV)/.dev-installed ## the app tier: the app in-process over ASGI
	@$(call pytest,tests/app)

test-process: mnist load-tools $(VENV)/.dev-installed ## the process tier: real uvicorn processes (hey; ~5 min)
	@$(call pytest,tests/process)

test-system: mnist system-tools $(VENV)/.dev-installed ## the system tier (root or the tools; Docker; long)
	@$(call pytest,tests/system)

# The container images, checked, then built and run for real (tests/system/test_container_files.py, then
# test_container.py with scripts/containers.py): hadolint and docker-compose config, then the CPU image
# built, served with `docker-compose --profile cpu up`, checked and stopped, and the train-cpu image built
# and run for a dry run. A Docker engine is started for the run when none answers, and a stand-in base
# image made once when no registry answers.
check-containers: container-tools $(VENV)/.dev-installed ## build, run and stop the CPU images (root; Docker; long)
	@$(call pytest,-s tests/system/test_container_files.py tests/system/test_container.py)

# The cluster rehearsed on one machine: two replicas behind haproxy under load, a rolling restart, a
# SIGKILL, and 1 against 2 replicas (tests/system/test_rehearsal.py).
rehearsal: $(VENV)/.dev-installed ## 2 replicas behind haproxy: restarts, SIGKILL, 1 vs 2 (hey, haproxy; ~1 min)
	$(call debian,$(LOAD_TOOLS) $(BALANCER_TOOLS),the cluster rehearsal)
	@$(call pytest,-s tests/system/test_rehearsal.py)

##@ Tools: as root each installs what is missing from Debian; without root one line names it and the fix
# `command=package`: the commands the tiers run and the Debian packages that provide them. A command counts
# as present wherever PATH or /usr/sbin has it (haproxy, dockerd and debootstrap live there).
LOAD_TOOLS := hey=hey
BROWSER_TOOLS := chromium=chromium
BALANCER_TOOLS := haproxy=haproxy
CONTAINER_TOOLS := dockerd=docker.io docker-compose=docker-compose debootstrap=debootstrap $(BALANCER_TOOLS)
KUBECTL_FIX := install kubectl 1.27 or newer, which embeds kustomize v5 (the Kubernetes project's release \
  binary; Debian's kubernetes-client is too old)

as-root := $(filter 0,$(shell id -u))
comma := ,
space := $() $()
found = $(shell PATH="$$PATH:/usr/sbin:/sbin" command -v $(1) 2>/dev/null)
missing = $(foreach pair,$(1),$(if $(call found,$(word 1,$(subst =, ,$(pair)))),,$(pair)))
commands-of = $(subst $(space),$(comma)$(space),$(foreach pair,$(1),$(word 1,$(subst =, ,$(pair)))))
packages-of = $(sort $(foreach pair,$(1),$(word 2,$(subst =, ,$(pair)))))
apt-complaint = $(if $(1),$(call commands-of,$(1)) $(if $(word 2,$(1)),are,is) missing: sudo apt-get install \
  $(call packages-of,$(1)))
stop-on = $(if $(1)$(2),$(error $(1)$(if $(and $(1),$(2)),; )$(2)))
apt-get = @echo "installing Debian's $(1) ($(2))" && apt-get update -qq && \
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1) >/dev/null
# $(call debian,PAIRS,PURPOSE[,COMPLAINT]): the recipe that makes every command of PAIRS present. Nothing
# when all are; apt-get as root; otherwise make stops on one line naming each missing command and its fix,
# as it does on a COMPLAINT (a tool apt-get cannot install).
debian = $(call debian-for,$(strip $(call missing,$(1))),$(2),$(3))
debian-for = $(call stop-on,$(if $(as-root),,$(call apt-complaint,$(1))),$(3))$(if $(1),$(call \
  apt-get,$(call packages-of,$(1)),$(2)),@true)
kubectl-complaint = $(if $(call found,kubectl),,kubectl is missing: $(KUBECTL_FIX))

load-tools: ## hey, the load generator of the benchmark, the soak and their tests (root installs it)
	$(call debian,$(LOAD_TOOLS),the load generator)

browser-tools: ## Debian's Chromium, which the browser tests drive through Playwright (root installs it)
	$(call debian,$(BROWSER_TOOLS),the browser tests drive it)

container-tools: ## Docker engine, docker-compose, debootstrap and haproxy (root installs them)
	$(call debian,$(CONTAINER_TOOLS),the container checks and the cluster rehearsal)

system-tools: ## every tool of the process and system tiers at once, kubectl checked (root installs the rest)
	$(call debian,$(LOAD_TOOLS) $(BROWSER_TOOLS) $(CONTAINER_TOOLS),the process and system tiers,$(kubectl-complaint))
