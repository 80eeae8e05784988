"""``fcn train`` and ``fcn export`` offer the same options, in the same groups and order, with
the same defaults, however their registration code is arranged.

The option tables below are the contract users and scripts rely on; help texts are checked
for presence only (their wording, and the defaults they quote, are tested where those live).
"""

from __future__ import annotations

import argparse

import pytest

from fcn.cli import build_parser
from training.config import EXPORTERS

TRAIN_GROUPS = {
    "data": [
        "--data",
        "--layout",
        "--val-fraction",
        "--mask-values",
        "--ignore-index",
        "--classes",
        "--num-classes",
        "--in-channels",
    ],
    "augmentation": ["--crop-size", "--scale-range", "--hflip", "--vflip", "--class-crop-p"],
    "model": ["--init", "--arch", "--encoder", "--encoder-weights", "--weights", "--model-option"],
    "optimisation": [
        "--epochs",
        "--max-minutes",
        "--epoch-size",
        "--batch-size",
        "--optimizer",
        "--lr",
        "--weight-decay",
        "--momentum",
        "--schedule",
        "--warmup",
        "--grad-clip",
        "--ema",
        "--loss",
        "--class-weights",
        "--amp",
        "--bf16",
        "--no-bf16",
    ],
    "run": [
        "--out",
        "--resume",
        "--seed",
        "--device",
        "--workers",
        "--channels-last",
        "--no-channels-last",
        "--val-share",
        "--plots",
        "--no-plots",
    ],
}
# Every train option defaults to None ("keep the config's default") except the repeatable one.
TRAIN_DEFAULTS = {"model_option": []}

EXPORT_GROUPS = {
    "options": [
        "--checkpoint",
        "--onnx",
        "--source",
        "--out",
        "--fp16-source",
        "--exporter",
        "--opset",
        "--tta",
        "--skip-parity",
        "--metadata",
    ],
    "INT8 quantization": [
        "--quantize",
        "--calibration-data",
        "--int8-out",
        "--calibration-method",
        "--calibration-size",
        "--calibration-limit",
        "--fp32-head",
        "--full-range-weights",
        "--val-fraction",
        "--seed",
    ],
    "bundling": ["--bundle", "--bundle-max-mb"],
    "precision checks (what `--precision auto` may serve)": ["--verify-data", "--no-verify"],
}
EXPORT_DEFAULTS = {
    "exporter": EXPORTERS[0],
    "tta": "none",
    "skip_parity": False,
    "metadata": [],
    "calibration_method": "minmax",
    "calibration_limit": 32,
    "fp32_head": False,
    "full_range_weights": False,
    "bundle_max_mb": 15.0,
    "no_verify": False,
}


def subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[name]


def groups(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Group title -> its option flags in registration order (``--help`` left out)."""
    found = {}
    for group in parser._action_groups:
        flags = [f for a in group._group_actions if a.dest != "help" for f in a.option_strings]
        if flags:
            found[group.title] = flags
    return found


def defaults(parser: argparse.ArgumentParser) -> dict[str, object]:
    return {
        a.dest: a.default for a in parser._actions if a.dest != "help" and a.default is not None
    }


@pytest.mark.parametrize(
    ("name", "expected_groups", "expected_defaults"),
    [("train", TRAIN_GROUPS, TRAIN_DEFAULTS), ("export", EXPORT_GROUPS, EXPORT_DEFAULTS)],
)
def test_options_groups_and_defaults_are_unchanged(name, expected_groups, expected_defaults):
    parser = subcommand(name)
    assert groups(parser) == expected_groups
    assert defaults(parser) == expected_defaults
    undocumented = [a.dest for a in parser._actions if not (a.help or "").strip()]
    assert not undocumented, f"options without help: {undocumented}"
    assert parser.description


def test_export_needs_exactly_one_source():
    parser = subcommand("export")
    (source,) = parser._mutually_exclusive_groups
    assert source.required
    assert [a.dest for a in source._group_actions] == ["checkpoint", "onnx", "source"]


def test_the_commands_dispatch_to_their_runners():
    from training.commands.export import run_export
    from training.commands.train import run_train

    assert subcommand("train").get_default("func") is run_train
    assert subcommand("export").get_default("func") is run_export


def test_train_and_evaluate_share_the_data_options():
    train, evaluate = groups(subcommand("train")), groups(subcommand("evaluate"))
    assert evaluate["data"] == train["data"]
