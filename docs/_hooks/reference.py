"""MkDocs hook: reference tables generated from the code they describe.

- ``<!-- settings-table -->`` becomes one row per field of ``service.http.settings.Settings``:
  its ``FCN_*`` variable, its ``fcn serve`` flag, its default and its description.
- ``<!-- cli-help: COMMAND -->`` becomes ``fcn COMMAND --help`` (and the help of its
  sub-actions, e.g. ``fcn data demo``), formatted by the command's own parser.

So a default or an option on the site is the one the code has; a marker naming no command
fails the build.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

SETTINGS = re.compile(r"^<!--\s*settings-table\s*-->\s*$", re.MULTILINE)
CLI_HELP = re.compile(r"^<!--\s*cli-help:\s*([\w-]+)\s*-->\s*$", re.MULTILINE)
HELP_COLUMNS = "100"  # argparse wraps help text to $COLUMNS


def _default(field: object) -> str:
    factory = getattr(field, "default_factory", None)
    value = factory() if factory is not None else getattr(field, "default", None)
    if value is None or value == [] or value == "":
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and value >= 10_000:
        return f"{value:_}".replace("_", "\u202f")
    return f"`{value}`"


def settings_table() -> str:
    from service.http.settings import Settings

    prefix = Settings.model_config.get("env_prefix", "")
    rows = ["| variable | `fcn serve` flag | default | meaning |", "| --- | --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        flag = "--model" if name == "models" else "--" + name.replace("_", "-")
        meaning = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{prefix}{name.upper()}` | `{flag}` | {_default(field)} | {meaning} |")
    return "\n".join(rows) + "\n"


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_help(command: str) -> str:
    from fcn.cli import build_parser

    commands = _subcommands(build_parser())
    if command not in commands:
        raise ValueError(f"no fcn command {command!r}; known: {', '.join(commands)}")
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        parser = commands[command]
        texts = [parser.format_help()]
        texts += [sub.format_help() for sub in _subcommands(parser).values()]
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return "".join(f"```text\n{text.rstrip()}\n```\n\n" for text in texts)


def on_config(config: dict) -> dict:
    root = str(Path(config["config_file_path"]).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)  # the repository's packages, also when mkdocs runs elsewhere
    return config


def on_page_markdown(markdown: str, page: object, config: object, files: object) -> str:
    markdown = SETTINGS.sub(lambda _: settings_table(), markdown)
    try:
        return CLI_HELP.sub(lambda m: cli_help(m.group(1)), markdown)
    except ValueError as exc:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{getattr(page, 'file', page)}: {exc}") from exc
