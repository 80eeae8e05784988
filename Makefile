# Two commands a new user needs: `make run` (the main job: the HTTP service) and `make test`.
# Both create and use the virtual environment in $(VENV) themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FCN := $(VENV)/bin/fcn
DEMO ?= demo

# Two installs, one stamp each. `make run` needs only the serving side (`.[serve]`: ONNX Runtime
# and the HTTP stack, no torch); everything else (tests, training, lint) installs `.[all]`. The
# full install touches the serve stamp too, so `make run` after `make test` installs nothing.
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed

# Where torch comes from. Empty: PyPI alone, whose Linux x86_64 torch wheels pull ~3 GB of CUDA
# libraries. A CPU-only machine can take the CPU build from PyTorch's own index instead:
#   make install TORCH_INDEX=https://download.pytorch.org/whl/cpu
# (an extra index: every other package still comes from PyPI; see docs/install.md).
TORCH_INDEX ?=
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check

.PHONY: install install-serve run demo default-model test test-all compose-test lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# --no-compile: byte-compiling every installed module (numpy, onnxruntime, pydantic...) took
# longer than unpacking them; Python compiles the few the server imports on first use.
$(SERVE_STAMP): pyproject.toml | $(PY)
	$(PIP_INSTALL) --no-compile -e '.[serve]'
	touch $(SERVE_STAMP)

$(STAMP): pyproject.toml | $(PY)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e '.[all]'
	touch $(STAMP) $(SERVE_STAMP)

install: $(STAMP)
install-serve: $(SERVE_STAMP)

# The main job: the HTTP service on the bundled default model, in the foreground (Ctrl-C stops
# it). A generated demo image gives the curl line something to segment.
HOST ?= 127.0.0.1
PORT ?= 8000
run: $(SERVE_STAMP)
	@$(FCN) data demo --out $(DEMO)/sample --count 1 --size 256 > /dev/null
	@echo ""
	@echo "  fcnseg is starting at http://$(HOST):$(PORT)/  (web page; API docs at /docs)"
	@echo "  segment an image (class-index PNG of the same size):"
	@echo "    curl -F image=@$(DEMO)/sample/images/0000.png -o mask.png http://$(HOST):$(PORT)/v1/segment"
	@echo "  coloured: add ?format=color, summary: ?format=json.  Stop with Ctrl-C."
	@echo ""
	$(FCN) serve --host $(HOST) --port $(PORT)

# The whole pipeline on the project's own generated data: a dataset of shapes, two minutes of
# training, export to ONNX (with the parity check), and coloured masks for every image.
demo: $(STAMP)
	$(FCN) data demo --out $(DEMO)/data --count 64 --size 192
	$(FCN) train --data $(DEMO)/data --arch unet --encoder resnet18 --max-minutes 2 --out $(DEMO)/run
	$(FCN) export --checkpoint $(DEMO)/run/best.pt --out $(DEMO)/model.onnx
	$(FCN) predict $(DEMO)/model.onnx $(DEMO)/data/images --out $(DEMO)/predictions --format color,overlay
	@echo "done: checkpoints and plots in $(DEMO)/run, model in $(DEMO)/model.onnx, masks in $(DEMO)/predictions"

# The bundled default model, service/assets/default.onnx (served as `default` by `fcn serve`):
# the project's own pipeline on its generated demo data, every seed fixed and a fixed epoch
# budget (not a time budget), so the run does not depend on the machine's speed. LinkNet on a
# MobileNetV3-Small encoder (timm, no pretrained weights): 1.35M parameters, a 5.8 MB file.
# About 11 minutes on 2 idle CPU cores. (The numbers can still differ in the last digits between
# CPUs: bfloat16 autocast is used where the CPU computes it natively.)
DEFAULT_MODEL_RUN ?= runs/default-model
DEFAULT_MODEL_TRAIN := --arch linknet --encoder tu-mobilenetv3_small_100 --epochs 50 --lr 3e-3 \
	--crop-size 192 --scale-range 0.7,1.4 --seed 0 --no-plots
default-model: $(STAMP)
	rm -rf $(DEFAULT_MODEL_RUN)
	$(FCN) data demo --out $(DEFAULT_MODEL_RUN)/data --count 512 --size 256 --seed 0
	$(FCN) train --data $(DEFAULT_MODEL_RUN)/data $(DEFAULT_MODEL_TRAIN) --out $(DEFAULT_MODEL_RUN)/run
	$(FCN) export --checkpoint $(DEFAULT_MODEL_RUN)/run/best.pt --out $(DEFAULT_MODEL_RUN)/default.onnx \
		--metadata "recipe=make default-model: fcn data demo --count 512 --size 256 --seed 0; fcn train $(strip $(DEFAULT_MODEL_TRAIN))"
	cp $(DEFAULT_MODEL_RUN)/default.onnx service/assets/default.onnx
	@echo "wrote service/assets/default.onnx (run in $(DEFAULT_MODEL_RUN))"

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

# docker-compose.yml for real: a private Docker engine (started when none answers; needs root and
# apt-get the first time), stand-in base images, both images built, then the end-to-end checks
# through the running containers (docker/e2e.sh, tests/compose). Fails when any check fails.
compose-test: $(STAMP)
	FCN_COMPOSE_REQUIRED=1 $(PY) -m pytest -m compose tests/compose

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
