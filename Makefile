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

.PHONY: install install-serve run demo default-model bundle-model default-model-from-source demo-model test test-slow test-long test-all \
	compose-test label-studio-venv label-studio-test label-studio-loop-test lint format clean

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

# The main job: the HTTP service on the bundled models (`default`: aerial land cover; `demo`:
# the generated shapes), in the foreground (Ctrl-C stops it). The page's "Try a sample" button
# segments the aerial photo shipped with it; the curl line sends the same file.
HOST ?= 127.0.0.1
PORT ?= 8000
SAMPLE := service/http/web/samples/dubai-aerial.jpg
run: $(SERVE_STAMP)
	@echo ""
	@echo "  fcnseg is starting at http://$(HOST):$(PORT)/  (web page: try the sample; API docs at /docs)"
	@echo "  segment an image (class-index PNG of the same size):"
	@echo "    curl -F image=@$(SAMPLE) -o mask.png http://$(HOST):$(PORT)/v1/segment"
	@echo "  coloured: add ?format=color, borders: ?format=outline, summary: ?format=json."
	@echo "  the shapes model: ?model=demo.  Stop with Ctrl-C."
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
# aerial land cover (building, land, road, vegetation, water, unlabeled) trained by the
# project's own `fcn train` / `fcn export` on the Dubai aerial set (public domain, CC0; see
# docs/default-model.md). Every seed fixed and a fixed epoch budget (not a time budget), no
# pretrained weights. U-Net on ResNet-18 (random init), 240 epochs of 256 crops of 256x256.
# `fcn export` writes the fp32 model and a static INT8 copy and records how each scores against
# fp32 on the 16 validation images; bundle-model keeps the file `--precision auto` would serve
# (`--bundle`: INT8 only when it loses <= 0.5 mIoU point) so one file ships.
AERIAL_DATA ?= ../shared/data/dubai_aerial
DEFAULT_MODEL_RUN ?= runs/default-model
DEFAULT_MODEL_TRAIN := --arch unet --encoder resnet18 --num-classes 6 --ignore-index 255 \
	--epochs 240 --crop-size 256 --seed 0 --no-plots
DEFAULT_MODEL_SOURCE := Dubai aerial imagery (Humans in the Loop / MBRSC, 'Semantic segmentation of aerial imagery'), public domain (CC0)
# The fp32 weights the bundle is quantized from, kept in the repository as an fp16 source file
# (models/default/README.md): `make default-model-from-source` rebuilds the bundled file from it
# in minutes, with the INT8 checks, on any machine.
DEFAULT_MODEL_SOURCE_FILE := models/default/default.fp16.onnx
DEFAULT_MODEL_EXPORT := --quantize int8 --calibration-data $(AERIAL_DATA) --verify-data $(AERIAL_DATA) \
	--bundle service/assets/default.onnx
default-model: $(STAMP)
	rm -rf $(DEFAULT_MODEL_RUN)
	$(FCN) train --data $(AERIAL_DATA) $(DEFAULT_MODEL_TRAIN) --out $(DEFAULT_MODEL_RUN)/run
	$(MAKE) --no-print-directory bundle-model

# Export, check and bundle an existing run (the venv is default-model's prerequisite); the fp32
# weights are kept as the new source file.
bundle-model:
	$(FCN) export --checkpoint $(DEFAULT_MODEL_RUN)/run/best.pt --out $(DEFAULT_MODEL_RUN)/default.onnx \
		--metadata "source=$(DEFAULT_MODEL_SOURCE)" --metadata "licence=CC0-1.0 (data); model: the project's licence" \
		--metadata "recipe=make default-model: fcn train --data dubai_aerial $(strip $(DEFAULT_MODEL_TRAIN)); fcn export --quantize int8" \
		--fp16-source $(DEFAULT_MODEL_SOURCE_FILE) $(DEFAULT_MODEL_EXPORT)

# Re-quantize and re-check the bundled default from its fp32 source, without training.
default-model-from-source: $(STAMP)
	$(FCN) export --source $(DEFAULT_MODEL_SOURCE_FILE) --out $(DEFAULT_MODEL_RUN)/default.onnx $(DEFAULT_MODEL_EXPORT)

# The demo model, service/assets/demo.onnx (served as `demo`; the shapes of `fcn data demo`):
# LinkNet on MobileNetV3-Small, 1.35M parameters, a 5.8 MB file, trained on 512 generated
# images with fixed seeds and epochs; about 11 minutes on 2 idle CPU cores.
DEMO_MODEL_RUN ?= runs/demo-model
DEMO_MODEL_TRAIN := --arch linknet --encoder tu-mobilenetv3_small_100 --epochs 50 --lr 3e-3 \
	--crop-size 192 --scale-range 0.7,1.4 --seed 0 --no-plots
demo-model: $(STAMP)
	rm -rf $(DEMO_MODEL_RUN)
	$(FCN) data demo --out $(DEMO_MODEL_RUN)/data --count 512 --size 256 --seed 0
	$(FCN) train --data $(DEMO_MODEL_RUN)/data $(DEMO_MODEL_TRAIN) --out $(DEMO_MODEL_RUN)/run
	$(FCN) export --checkpoint $(DEMO_MODEL_RUN)/run/best.pt --out $(DEMO_MODEL_RUN)/demo.onnx \
		--metadata "recipe=make demo-model: fcn data demo --count 512 --size 256 --seed 0; fcn train $(strip $(DEMO_MODEL_TRAIN))"
	cp $(DEMO_MODEL_RUN)/demo.onnx service/assets/demo.onnx
	@echo "wrote service/assets/demo.onnx (run in $(DEMO_MODEL_RUN))"

# The fast developer loop (pyproject's addopts leave out the tests marked slow). Two pytest
# processes: the torch-side tests (tests/training) run in their own. In one process, after the
# serving, browser and Ray tests had loaded their runtimes, the whole suite died with SIGSEGV in
# tests/training on an AVX2-only Zen 3 (twice, at the same test; never in either half alone).
PYTEST_HALVES = $(PY) -m pytest $(1) --ignore=tests/training && $(PY) -m pytest $(1) tests/training
test: $(STAMP)
	$(call PYTEST_HALVES,)

# The tests marked slow (end to end, tens of seconds to minutes each: Ray, load, fuzzing, the
# default model at full size, FCN-8s export, peak memory at 64 MP): CI runs them
# after `make test`.
test-slow: $(STAMP)
	$(call PYTEST_HALVES,-m "slow")

# The tests marked long (minutes to half an hour each: 1000 fuzz examples per operation, every
# registered architecture exported): beyond CI's budget, run before a release.
test-long: $(STAMP)
	$(call PYTEST_HALVES,-m "long and not label_studio")

# Every test but the compose and Label Studio ones (their own targets below). With
# FCN_REQUIRE_ALL=1 a missing browser, nginx, data set or extra fails instead of skipping.
test-all: $(STAMP)
	$(call PYTEST_HALVES,-m "not compose and not label_studio")

# docker-compose.yml for real: a private Docker engine (started when none answers; needs root and
# apt-get the first time), stand-in base images, both images built, then the end-to-end checks
# through the running containers (docker/e2e.sh, tests/compose). Fails when any check fails.
compose-test: $(STAMP)
	FCN_COMPOSE_REQUIRED=1 $(PY) -m pytest -m compose tests/compose

# The real Label Studio (tests/labeling): in a virtual environment of its own, since its Django
# stack pins packages the project's does not share; then the pre-annotation round trip
# through it (docs/label-studio.md). Fails when Label Studio is missing or any check fails.
LS_VENV ?= .venv-label-studio
$(LS_VENV)/.installed: tests/labeling/requirements.txt
	$(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/labeling/requirements.txt
	touch $@
label-studio-venv: $(LS_VENV)/.installed
LS_RUN = FCN_LABEL_STUDIO_REQUIRED=1 FCN_LABEL_STUDIO_VENV=$(abspath $(LS_VENV)) $(PY) -m pytest -s
label-studio-test: $(STAMP) $(LS_VENV)/.installed
	$(LS_RUN) -m "label_studio and not long" tests/labeling

# The labelling loop end to end through the real Label Studio (tests/labeling/test_loop_real.py:
# annotations -> fine-tune -> gate -> live; about 15 minutes on 2 cores, beyond CI's budget).
label-studio-loop-test: $(STAMP) $(LS_VENV)/.installed
	$(LS_RUN) -m "label_studio and long" tests/labeling

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
