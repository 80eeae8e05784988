"""Subcommands of ``fcn`` implemented by the service package (no torch, ever).

Each subcommand lives in ``service/commands/<name>.py`` with ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib

COMMANDS: tuple[str, ...] = ("predict", "serve")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the serving subcommands to the ``fcn`` parser."""
    for name in COMMANDS:
        importlib.import_module(f"service.commands.{name}").register(subparsers)
