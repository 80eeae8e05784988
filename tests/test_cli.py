"""The ``fcn`` command starts without torch and names the extra a subcommand needs."""

from __future__ import annotations

import subprocess
import sys

from fcn.cli import missing_extra_message

TORCH_STACK = ("torch", "torchvision", "segmentation_models_pytorch", "albumentations")


def test_help_lists_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "fcn", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "usage: fcn" in result.stdout


def test_entry_point_imports_no_torch(python_without):
    result = python_without(
        """
        import contextlib, io, sys
        from fcn.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(["--help"])
            except SystemExit as exc:
                assert exc.code == 0, exc.code
        assert "usage: fcn" in out.getvalue()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "onnxruntime"})
        assert not loaded, loaded
        print("ok")
        """,
        blocked=TORCH_STACK,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_missing_extra_message_names_the_extra():
    error = ModuleNotFoundError("No module named 'torch'", name="torch")
    message = missing_extra_message("train", error)
    assert "'train' extra" in message and "pip install 'fcnseg[train]'" in message
    error = ModuleNotFoundError("No module named 'onnxruntime.capi'", name="onnxruntime.capi")
    assert "'serve' extra" in missing_extra_message("predict", error)
    assert missing_extra_message("x", ModuleNotFoundError("nope", name="nope")) is None
