"""Subcommands of ``fcn`` implemented by the training package.

This module must stay importable without torch: command functions import their
implementation lazily.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the training subcommands to the ``fcn`` parser."""
