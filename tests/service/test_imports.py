"""The serving engine never pulls in torch, and the engine/batch side never pulls in FastAPI."""

from __future__ import annotations

import subprocess
import sys

MODULES = (
    "service.errors",
    "service.imaging",
    "service.metadata",
    "service.tiling",
    "service.engine",
    "service.backends",
    "service.backends.ort",
    "service.backends.openvino",
    "service.backends.select",
    "service.backends.onnx_props",
    "service.masks",
    "service.batch",
    "service.commands.predict",
)


def test_engine_modules_import_neither_torch_nor_fastapi() -> None:
    code = (
        f"import importlib, sys\nfor m in {MODULES!r}: importlib.import_module(m)\n"
        "print(sorted(m for m in ('torch', 'fastapi', 'starlette') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_engine_modules_work_without_torch_installed(python_without) -> None:
    result = python_without(
        f"import importlib\nfor m in {MODULES!r}: importlib.import_module(m)\n"
        "import service.engine, fcn.cli\n"
        "assert fcn.cli.main(['predict', '--help']) == 0\n",
        blocked=("torch", "fastapi", "torchvision"),
    )
    # argparse's --help exits 0 through SystemExit; anything else is a failure.
    assert result.returncode == 0, result.stderr
    assert "usage: fcn predict" in result.stdout
