# Two commands a new user needs: `make run` (the main job) and `make test` (the tests).
# Both create and use the virtual environment in $(VENV) themselves.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FCN := $(VENV)/bin/fcn
STAMP := $(VENV)/.installed
DEMO ?= demo

.PHONY: install run test test-all lint format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all]'
	touch $(STAMP)

install: $(STAMP)

# The main job on the project's own generated data: a dataset of shapes, two minutes of
# training, export to ONNX (with the parity check), and coloured masks for every image.
run: $(STAMP)
	$(FCN) data demo --out $(DEMO)/data --count 64 --size 192
	$(FCN) train --data $(DEMO)/data --arch unet --encoder resnet18 --max-minutes 2 --out $(DEMO)/run
	$(FCN) export --checkpoint $(DEMO)/run/best.pt --out $(DEMO)/model.onnx
	$(FCN) predict $(DEMO)/model.onnx $(DEMO)/data/images --out $(DEMO)/predictions --format color,overlay
	@echo "done: checkpoints and plots in $(DEMO)/run, model in $(DEMO)/model.onnx, masks in $(DEMO)/predictions"

test: $(STAMP)
	$(PY) -m pytest

test-all: $(STAMP)
	$(PY) -m pytest -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(DEMO) .pytest_cache .ruff_cache
