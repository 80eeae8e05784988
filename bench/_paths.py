"""How the benchmarks' results files name paths: never by this machine's layout.

A path inside the repository is shown relative to it, one beside it (the data in
``../shared``) as ``../...``; anything else (a temporary folder, another checkout) by its name.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The real data sets: $FCN_SHARED_DATA, else ../shared/data beside the checkout (as the tests
# find them, tests/requirements.py).
SHARED_DATA = Path(os.environ.get("FCN_SHARED_DATA") or ROOT.parent / "shared" / "data")


def shown(path: str | os.PathLike | None) -> str | None:
    """``path`` as a results file records it (None stays None)."""
    if path is None:
        return None
    relative = os.path.relpath(os.path.abspath(path), ROOT)
    if relative.startswith(os.pardir + os.sep + os.pardir) or os.path.isabs(relative):
        return Path(path).name
    return relative
