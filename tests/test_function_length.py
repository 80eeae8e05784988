"""No function in the packages grows past a screenful or two: split it into named steps.

A long function usually does several jobs (one of them, once, was defining a file format);
the limit keeps each readable top to bottom. Counted from the ``def`` line to the last line
of the body, decorators excluded.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fcn", "training", "service")
MAX_LINES = 120


def function_lengths(folder: Path) -> dict[str, int]:
    """``path:line name`` -> length in lines, for every function and method under ``folder``."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(folder.parent).as_posix()}:{node.lineno} {node.name}"
                found[where] = node.end_lineno - node.lineno + 1
    return found


def test_no_function_is_longer_than_the_limit() -> None:
    long = []
    for package in PACKAGES:
        lengths = function_lengths(ROOT / package)
        assert len(lengths) > 20, f"{package}/ holds almost no functions: moved?"
        long += [f"{where} ({n} lines)" for where, n in lengths.items() if n > MAX_LINES]
    assert not long, f"functions over {MAX_LINES} lines (split them): " + "; ".join(long)


def test_the_count_covers_methods_async_and_nested_functions(tmp_path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    long_body = "    x = 1\n" * 121
    (package / "a.py").write_text(f"@decorator\ndef f():\n{long_body}\n\ndef g():\n    return 1\n")
    (package / "sub" / "b.py").write_text(
        "class C:\n    async def m(self):\n        def inner():\n            pass\n"
    )
    assert function_lengths(package) == {
        "pkg/a.py:2 f": 122,
        "pkg/a.py:126 g": 2,
        "pkg/sub/b.py:2 m": 3,
        "pkg/sub/b.py:3 inner": 2,
    }
