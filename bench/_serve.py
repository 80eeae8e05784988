"""The benchmarks' server launcher: the end-to-end tests' one (tests/e2e/server.py), not a copy.

A bench script runs as ``python bench/NAME.py``, so Python puts ``bench/`` on the path, not the
repository root; this module adds the root (for ``tests.e2e.server``) and re-exports what the
benches use: start ``fcn serve`` (or any server) on a free loopback port, wait until ready, stop.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.server import Server, free_port, launch, start, stop  # noqa: E402

__all__ = ["ROOT", "Server", "free_port", "launch", "start", "stop"]
