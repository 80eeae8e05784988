"""Subcommands of ``fcn`` implemented by the service package (no torch, ever)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the serving subcommands to the ``fcn`` parser."""
