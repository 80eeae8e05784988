"""docs/design.md's map of the code matches the tree: every module is named, every name exists.

The map is the first code block under "## Architecture": a name (``x.py`` or ``folder/``) in
the left column, indented two spaces under its folder; a description from column 31
(continuation lines start there too). A folder listed without indented children may name its
modules in its description (``data/  layouts.py -> decoding.py ...``).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"
DESCRIPTION_COLUMN = 30
MODULE = re.compile(r"\b\w+\.py\b")
# The packages whose every module the map must name (below them: training's subpackages and
# all of service's; fcn is flat).
COVERED = ("fcn", "training", "service")


def map_block(text: str) -> list[str]:
    section = text.split("## Architecture", 1)[1]
    return section.split("```", 2)[1].strip("\n").splitlines()


def named_paths(lines: list[str]) -> set[str]:
    """Every path the map names, relative to the repository root."""
    paths: set[str] = set()
    stack: list[tuple[int, str]] = []  # (indent, folder path)
    last_folder: str | None = None
    has_children: dict[str, bool] = {}
    descriptions: dict[str, list[str]] = {}
    for line in lines:
        indent = len(line) - len(line.lstrip())
        if not line.strip():
            continue
        if indent >= DESCRIPTION_COLUMN:
            if last_folder is not None:
                descriptions[last_folder].append(line)
            continue
        name, _, description = line.strip().partition(" ")
        assert indent % 2 == 0, f"map: odd indentation in {line!r}"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        if stack:
            has_children[parent] = True
        path = parent + name
        paths.add(path.rstrip("/"))
        if name.endswith("/"):
            stack.append((indent, path))
            last_folder = path
            has_children.setdefault(path, False)
            descriptions[path] = [description]
        else:
            last_folder = None
    for folder, text in descriptions.items():
        if not has_children[folder]:
            paths.update(folder + module for module in MODULE.findall(" ".join(text)))
    return paths


def tree_paths() -> set[str]:
    """The modules and packages of ``COVERED`` (``__init__.py`` aside)."""
    found: set[str] = set()
    for top in COVERED:
        for path in (ROOT / top).rglob("*"):
            rel = path.relative_to(ROOT)
            if "__pycache__" in rel.parts or path.name == "__init__.py":
                continue
            # http/routes and http/web are named as folders; their files are the routes' business
            if rel.parts[:3] in (("service", "http", "routes"), ("service", "http", "web")):
                if len(rel.parts) > 3:
                    continue
            if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists()):
                found.add(rel.as_posix())
    return found


def test_every_module_is_on_the_map() -> None:
    named = named_paths(map_block(DESIGN.read_text()))
    missing = sorted(tree_paths() - named)
    assert not missing, f"docs/design.md's map does not name: {missing}"


def test_every_path_on_the_map_exists() -> None:
    named = named_paths(map_block(DESIGN.read_text()))
    gone = sorted(p for p in named if not (ROOT / p).exists())
    assert not gone, f"docs/design.md's map names paths that do not exist: {gone}"


def test_the_map_parser_reads_nesting_and_descriptions() -> None:
    lines = [
        "a/                            top",
        "  b.py                        a module",
        "  c/                          x.py and y.py",
        "                              z.py on the next line",
        "  d/                          a folder",
        "    e.py                      nested",
    ]
    assert named_paths(lines) == {
        "a",
        "a/b.py",
        "a/c",
        "a/c/x.py",
        "a/c/y.py",
        "a/c/z.py",
        "a/d",
        "a/d/e.py",
    }
