"""MkDocs hook: the ``fcn serve`` settings table, rendered from the settings class itself.

A ``<!-- settings-table -->`` line in a page becomes one row per field of
``service.http.settings.Settings``: its ``FCN_*`` variable, its ``fcn serve`` flag, its default
and its description, so the documented defaults are the ones the code uses.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

MARKER = re.compile(r"^<!--\s*settings-table\s*-->\s*$", re.MULTILINE)


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


def on_config(config: dict) -> dict:
    root = str(Path(config["config_file_path"]).resolve().parent)
    if root not in sys.path:
        sys.path.insert(0, root)  # the repository's packages, also when mkdocs runs elsewhere
    return config


def on_page_markdown(markdown: str, page: object, config: object, files: object) -> str:
    if not MARKER.search(markdown):
        return markdown
    return MARKER.sub(lambda _: settings_table(), markdown)
