"""What a test needs from the machine, and one rule for when it is missing.

A test that needs Chromium, nginx, Docker, Label Studio or the real data sets in ``../shared``
skips on a developer's machine that lacks them. In CI (``.ci/run`` sets ``FCN_REQUIRE_ALL=1``)
the same test fails instead, so a missing package or data set cannot pass as green.
``FCN_COMPOSE_REQUIRED=1`` and ``FCN_LABEL_STUDIO_REQUIRED=1`` (the make targets') still
require their own part.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRE_ALL = "FCN_REQUIRE_ALL"
ROOT = Path(__file__).resolve().parents[1]


def required(switch: str | None = None) -> bool:
    """Whether a missing requirement is a failure: ``FCN_REQUIRE_ALL=1``, or ``switch=1``."""
    return os.environ.get(REQUIRE_ALL) == "1" or bool(switch and os.environ.get(switch) == "1")


def require_or_skip(reason: str, *, switch: str | None = None, module: bool = False) -> None:
    """Skip with ``reason``, or fail with it when requirements are enforced (:func:`required`).

    Args:
        module: called while a test module is imported (``pytest.skip(allow_module_level)``).
    """
    if required(switch):
        names = REQUIRE_ALL + (f" or {switch}" if switch else "")
        pytest.fail(f"required here ({names}=1): {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=module)


def shared_data_root() -> Path:
    """Where the real data sets live: ``$FCN_SHARED_DATA``, else ``shared/data`` in the first
    folder up from the repository that has one (``../shared`` beside a checkout or worktree)."""
    if os.environ.get("FCN_SHARED_DATA"):
        return Path(os.environ["FCN_SHARED_DATA"])
    for parent in ROOT.parents:
        if (parent / "shared" / "data").is_dir():
            return parent / "shared" / "data"
    return ROOT.parent / "shared" / "data"


def shared_data(*parts: str, module: bool = False) -> Path:
    """``shared_data_root() / parts``, or skip (fail under FCN_REQUIRE_ALL) when it is missing."""
    path = shared_data_root().joinpath(*parts)
    if not path.exists():
        require_or_skip(
            f"{path} is not available (real data lives in ../shared/data)", module=module
        )
    return path
