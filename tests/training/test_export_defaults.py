"""``fcn export``'s defaults and help agree with the code that applies them.

The export command is read for ``fcn --help`` and imports no torch, so a few of its defaults are
named in training/commands/export.py; these tests fail when one drifts from its home.
"""

from __future__ import annotations

import argparse
import inspect
import re
from pathlib import Path

from service.backends.select import MAX_MIOU_DROP
from training.commands import export as export_command
from training.config import DataConfig
from training.export import bundle, quantize

ROOT = Path(__file__).resolve().parents[2]


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    export_command.register(parser.add_subparsers())
    return parser._subparsers._group_actions[0].choices["export"]


def option(parser: argparse.ArgumentParser, flag: str) -> argparse.Action:
    return next(a for a in parser._actions if flag in a.option_strings)


def test_export_defaults_are_the_code_s_defaults() -> None:
    parser = export_parser()
    assert option(parser, "--bundle-max-mb").default == bundle.MAX_MB
    bundle_default = inspect.signature(bundle.bundle).parameters["max_mb"].default
    assert bundle_default == bundle.MAX_MB
    method = inspect.signature(quantize.quantize_int8).parameters["method"].default
    assert option(parser, "--calibration-method").default == method
    split = inspect.signature(quantize.calibration_images).parameters
    data = DataConfig(root="x")
    assert split["val_fraction"].default == data.val_fraction
    assert split["seed"].default == data.seed
    assert export_command.SPLIT_DEFAULTS == {"val_fraction": data.val_fraction, "seed": data.seed}


def test_export_help_shows_the_values_in_force() -> None:
    text = " ".join(export_parser().format_help().split())
    assert f"lost <= {MAX_MIOU_DROP:g} mIoU point" in text
    assert f"(default {bundle.MAX_MB:g})" in text
    assert f"else {DataConfig(root='x').val_fraction:g})" in text
    assert f"else {DataConfig(root='x').seed})" in text


def test_the_threshold_written_in_prose_is_the_one_in_force() -> None:
    # The Makefile's bundle-model comment and the docs say the number in words.
    for path in ("Makefile", "docs/configuration.md", "docs/backends.md"):
        text = (ROOT / path).read_text()
        found = re.findall(r"(?:<=|at most) \**(\d+(?:\.\d+)?) (?:mIoU )?point", text)
        assert found, path
        assert {float(x) for x in found} == {MAX_MIOU_DROP}, (path, found)
