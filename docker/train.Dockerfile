# The training image: `fcn data`, `fcn train`, `fcn evaluate`, `fcn export` on CPU.
#   docker build -f docker/train.Dockerfile -t fcnseg-train .
#   docker run --rm -v fcn-models:/models fcnseg-train \
#       sh -c 'fcn data demo --out /work/data && fcn train --data /work/data --out /work/run \
#              && fcn export --checkpoint /work/run/best.pt --out /models/demo.onnx'
#
# torch and torchvision come from TORCH_INDEX_URL, by default the PyTorch CPU wheel index (a few
# hundred MB instead of the multi-GB CUDA build that plain PyPI serves on Linux). Behind a mirror
# or offline, point it elsewhere, and add indexes for what that one lacks with
# TORCH_EXTRA_INDEX_URL (space-separated) and pin what the mirror holds with TORCH_REQUIREMENTS,
# e.g.
#   --build-arg TORCH_INDEX_URL=https://mirror.example/pytorch-cpu/simple \
#   --build-arg TORCH_REQUIREMENTS="torch==2.14.1 torchvision==0.29.1"
# (docker-compose.yml passes all three through from the environment; docker/local_index.py
# serves a machine's local wheel indexes for them).
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_EXTRA_INDEX_URL=
ARG TORCH_REQUIREMENTS="torch torchvision"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/fcn/bin:$PATH
# The build secret `ca_bundle`: see serve.Dockerfile. --no-compile: no .pyc at install; compiling
# torch's thousands of modules costs the build more than it saves a job that imports them once.
RUN --mount=type=secret,id=ca_bundle \
    if grep -qs "BEGIN CERTIFICATE" /run/secrets/ca_bundle; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && set -- && for url in ${TORCH_EXTRA_INDEX_URL}; do set -- "$@" --extra-index-url "$url"; done \
    && python -m venv /opt/fcn \
    && /opt/fcn/bin/pip install --no-compile --index-url "${TORCH_INDEX_URL}" "$@" ${TORCH_REQUIREMENTS}
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fcn/ fcn/
COPY training/ training/
COPY service/ service/
# torch/torchvision are already satisfied, so this adds only the rest of the train extra.
RUN --mount=type=secret,id=ca_bundle \
    if grep -qs "BEGIN CERTIFICATE" /run/secrets/ca_bundle; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && /opt/fcn/bin/pip install --no-compile ".[train]" \
    && /opt/fcn/bin/python -c "import torch, fcn; print('torch', torch.__version__)"
RUN groupadd --system --gid 10001 fcn \
    && useradd --system --uid 10001 --gid fcn --create-home --home-dir /work fcn \
    && mkdir -p /models && chown fcn:fcn /models /work
# albumentations asks PyPI for a newer release at every import; a training job should not.
ENV NO_ALBUMENTATIONS_UPDATE=1
USER fcn
WORKDIR /work
CMD ["fcn", "--help"]
