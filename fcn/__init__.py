"""Fully convolutional segmentation models (torch).

The public API is re-exported lazily so that ``import fcn`` (and the ``fcn`` console command,
which lives in :mod:`fcn.cli`) does not import torch: the serving image installs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The one place the version is written: pyproject.toml reads it (setuptools dynamic ``attr``,
# read statically, without importing) into the package metadata.
__version__ = "0.1.0"

_LAZY = {
    "build_model": "fcn.registry",
    "list_models": "fcn.registry",
    "register_model": "fcn.registry",
    "convolutionalize": "fcn.vgg",
}

__all__ = ["__version__", "build_model", "convolutionalize", "list_models", "register_model"]

if TYPE_CHECKING:  # pragma: no cover
    from fcn.registry import build_model, list_models, register_model
    from fcn.vgg import convolutionalize


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fcn' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
