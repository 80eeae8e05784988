# The serving image: ONNX Runtime + the HTTP service, no torch.
#   docker build -f docker/serve.Dockerfile -t fcnseg-serve .
#   docker run -p 8000:8000 fcnseg-serve        # serves the bundled default model
# Models: mount a folder of *.onnx files at /models (FCN_MODELS_DIR), or set FCN_MODELS.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---- build: install the package with only the `serve` extra into a virtual environment ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/fcn
WORKDIR /src
COPY pyproject.toml README.md ./
COPY fcn/ fcn/
COPY training/ training/
COPY service/ service/
# A plain (non-editable) install: the package, its web page and the bundled default model
# (service/assets/default.onnx) are copied into the venv; /src is left behind in this stage.
# Then what serving never runs leaves the venv: pip and setuptools (nothing is installed at run
# time) and the packages' own test suites (numpy's alone are 9 MB). The .pyc files stay: the
# root filesystem is read-only at run time, so without them every start compiles in memory.
# The build secret `ca_bundle` (FCN_CA_BUNDLE in docker-compose.yml) is the CA bundle pip trusts
# when it holds a certificate, e.g. behind a TLS-intercepting proxy; it is never stored in a layer.
RUN --mount=type=secret,id=ca_bundle \
    if grep -qs "BEGIN CERTIFICATE" /run/secrets/ca_bundle; then export PIP_CERT=/run/secrets/ca_bundle; fi \
    && /opt/fcn/bin/pip install ".[serve]" \
    && /opt/fcn/bin/python -c "from service.models import bundled_model_path; bundled_model_path()" \
    && ! /opt/fcn/bin/python -c "import torch" 2>/dev/null \
    && /opt/fcn/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && find /opt/fcn/lib -type d -name tests -prune -exec rm -rf {} +

# ---- runtime ----
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="fcnseg-serve" \
      org.opencontainers.image.description="FCN semantic segmentation over HTTP (ONNX Runtime, no torch)" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 fcn \
    && useradd --system --uid 10001 --gid fcn --no-create-home --home-dir /nonexistent fcn \
    && mkdir /models /var/cache/fcnseg && chown fcn:fcn /models /var/cache/fcnseg
COPY --from=build /opt/fcn /opt/fcn
ENV PATH=/opt/fcn/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FCN_HOST=0.0.0.0 \
    FCN_PORT=8000 \
    FCN_DEVICE=cpu \
    FCN_SHUTDOWN_GRACE_S=25 \
    FCN_DECISION_CACHE=/var/cache/fcnseg/decisions.json
# /var/cache/fcnseg: --precision auto's decision per CPU and model (docs/cpus.md); compose mounts
# one volume there for all replicas, so they serve the same path.
USER fcn
WORKDIR /models
EXPOSE 8000
# slim images have no curl: ask with the Python that is already there (-I -S: no site-packages,
# about 0.1 s of CPU). /healthz is cheap and answers even when every inference is busy, so
# a loaded replica is not restarted. The interval is short because the first check runs one
# interval after the start and `docker compose up --wait` waits for it: --start-interval (check
# often only while starting) needs Docker Engine 25, and this image builds on 20.10 too.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-I", "-S", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('FCN_PORT', '8000'), timeout=2)"]
# SIGTERM (docker stop) drains: readiness turns false, work in flight finishes.
STOPSIGNAL SIGTERM
CMD ["fcn", "serve"]
