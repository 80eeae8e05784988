"""Subcommands of ``fcn`` implemented by the training package.

Each subcommand lives in ``training/commands/<name>.py`` with ``register(subparsers)``. Those
modules must stay importable without torch: command functions import their implementation
lazily, so ``fcn --help`` is instant and a missing extra gets a clear message.
"""

from __future__ import annotations

import argparse
import importlib

COMMANDS: tuple[str, ...] = ("data", "train", "evaluate", "export")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training subcommands to the ``fcn`` parser."""
    for name in COMMANDS:
        importlib.import_module(f"training.commands.{name}").register(subparsers)
