# rnnserve images. docker-compose.yml builds them for you (README, "Quickstart (Docker)").
#
#   docker build -t rnnserve:gpu .                                   GPU: CUDA 13.0 + cuDNN 9, onnxruntime-gpu, torch
#   docker build -t rnnserve:cpu --build-arg VARIANT=cpu .           CPU: python slim, onnxruntime, no CUDA
#   docker build -t rnnserve-train:gpu --target train \
#       --build-arg EXTRAS=gpu,train .                               one-shot training and export
#
# Every RNNSERVE_ setting can be overridden at run time (docker run -e RNNSERVE_MAX_BATCH_SIZE=64 ...).
#
# No `# syntax=` line: BuildKit's built-in frontend (Docker 20.10 and later) handles RUN --mount, and the
# line would make every build fetch a frontend image from a registry, which fails on a machine without one.
# pip settings (an index, a mirror, a CA) reach the build as the secret `pip.conf`, never as a layer:
#   docker build --secret id=pip.conf,src=$HOME/.config/pip/pip.conf ...
# scripts/containers.py passes the host's own that way.

# gpu | cpu
ARG VARIANT=gpu
# The CPU image's interpreter; the GPU image uses Ubuntu 24.04's python3 (3.12 as well).
ARG PYTHON_VERSION=3.12
# CUDA 13.0 and cuDNN 9: what onnxruntime-gpu on PyPI is built for (it requires nvidia-cuda-runtime~=13.0
# and nvidia-cudnn-cu13~=9.0) and what torch 2.14.1+cu130 (the train target) is built for.
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---- one base per variant: an interpreter and nothing else -------------------------------------------
FROM python:${PYTHON_VERSION}-slim-bookworm AS base-cpu

FROM ${CUDA_IMAGE} AS base-gpu
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*

FROM base-${VARIANT} AS base
# ONNX Runtime's telemetry off: a server makes no calls home, and on a read-only root its attempt to store a
# device id would put a warning that is not a JSON line into the log.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ORT_DISABLE_TELEMETRY=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# ---- build: the package and its dependencies in a virtual environment ----------------------------------
FROM base AS build
ARG VARIANT
RUN python3 -m venv "$VIRTUAL_ENV"
WORKDIR /src
# Dependencies first, read from pyproject.toml alone, so that a change to the code reuses these layers.
COPY pyproject.toml ./
# The dependencies and the variant's ONNX Runtime (extra `cpu` or `gpu`): every image of a variant shares
# this layer, API and training alike, because nothing above it differs between them (EXTRAS comes below).
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(*p["dependencies"], *p["optional-dependencies"][sys.argv[1]], sep="\n")' \
        "$VARIANT" > /tmp/requirements-runtime.txt \
    && pip install -r /tmp/requirements-runtime.txt
# The pyproject extras to install; empty means the variant's default: `gpu,torchscript` for the GPU image
# (ONNX Runtime's CUDA provider and torch cu130 for RNNSERVE_BACKEND=torchscript, both on CUDA 13.0),
# `cpu` for the CPU image (onnxruntime alone, no torch, no CUDA wheels). EXTRAS=gpu gives a lean GPU
# image with ONNX Runtime only; `train` is for the train target. Those beyond the variant's own come here.
ARG EXTRAS=""
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    python -c 'import sys, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print(*[r for e in sys.argv[1].split(",") if e not in ("", sys.argv[2]) for r in p["optional-dependencies"][e]], sep="\n")' \
        "${EXTRAS:-$(if [ "$VARIANT" = gpu ]; then echo gpu,torchscript; else echo cpu; fi)}" "$VARIANT" \
        > /tmp/requirements-extras.txt \
    && if [ -s /tmp/requirements-extras.txt ]; then pip install -r /tmp/requirements-extras.txt; fi
COPY README.md ./
COPY service ./service
COPY training ./training
# A regular (not editable) install; `pip check` proves the dependency layers above were complete.
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    pip install --no-deps . \
    && pip check

# ---- train: one-shot re-training and export into a mounted models/ (docker compose run --rm train) -------
# The build stage as it is: its venv is the whole of the image, and copying it (torch and its CUDA wheels,
# 6 GB) into a fresh stage would cost a minute of every cold build and save nothing.
FROM build AS train
# Built without the train extra, this image could not train: say so at build time, not at run time.
RUN python -c "import torch, torchvision, onnx, onnxruntime" \
    || { echo "the train target needs --build-arg EXTRAS=gpu,train (or cpu,train)" >&2; exit 1; }
WORKDIR /app
# Volumes mount over these; world-writable so that the host user compose runs as can write into them.
RUN mkdir -p /app/models /app/data /app/reports && chmod 1777 /app/data /app/reports
ENV HOME=/tmp \
    MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001
CMD ["sh", "-c", "python -m training.digit --data-dir data --out models --device auto && python -m training.forecast --out models --device auto"]

# ---- runtime: the API (the default target) ---------------------------------------------------------------
FROM base AS runtime
ARG VARIANT
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="rnnserve" \
      org.opencontainers.image.description="REST model serving for recurrent networks with dynamic batching (ONNX Runtime, ${VARIANT})" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 rnnserve \
    && useradd --system --uid 10001 --gid rnnserve --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin rnnserve
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# The committed models are baked in; mount another repository over /app/models (read-only) to swap them.
COPY models ./models
ENV RNNSERVE_HOST=0.0.0.0 \
    RNNSERVE_PORT=8000 \
    RNNSERVE_MODEL_DIR=/app/models \
    RNNSERVE_BACKEND=onnx \
    RNNSERVE_DEVICE=auto
USER 10001:10001
EXPOSE 8000
# Ready, not just alive: 503 until every model is loaded and warmed up. No curl in the slim image.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('RNNSERVE_PORT', '8000'), timeout=2)"]
# uvicorn drains in-flight requests on SIGTERM; compose's stop_grace_period gives it the time.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "service"]
