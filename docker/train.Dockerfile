# The training image: `fcn data`, `fcn train`, `fcn evaluate`, `fcn export` on CPU.
#   docker build -f docker/train.Dockerfile -t fcnseg-train .
#   docker run --rm -v fcn-models:/models fcnseg-train \
#       sh -c 'fcn data demo --out /work/data && fcn train --data /work/data --out /work/run \
#              && fcn export --checkpoint /work/run/best.pt --out /models/demo.onnx'
#
# torch comes from the PyTorch CPU wheel index (about 200 MB instead of the ~2.5 GB CUDA build
# that plain PyPI serves on Linux). Behind a mirror or offline, build with
#   --build-arg TORCH_INDEX_URL=https://pypi.org/simple     (plain PyPI torch, CUDA included)
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
FROM ${PYTHON_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/fcn/bin:$PATH
RUN python -m venv /opt/fcn \
    && /opt/fcn/bin/pip install --index-url "${TORCH_INDEX_URL}" torch torchvision
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fcn/ fcn/
COPY training/ training/
COPY service/ service/
# torch/torchvision are already satisfied, so this adds only the rest of the train extra.
RUN /opt/fcn/bin/pip install ".[train]" \
    && /opt/fcn/bin/python -c "import torch, fcn; print('torch', torch.__version__)"
RUN groupadd --system --gid 10001 fcn \
    && useradd --system --uid 10001 --gid fcn --create-home --home-dir /work fcn \
    && mkdir -p /models && chown fcn:fcn /models /work
USER fcn
WORKDIR /work
CMD ["fcn", "--help"]
